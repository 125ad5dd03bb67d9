#!/usr/bin/env python3
"""Measurements of bench/udp.sh (python3 stdlib only; run through udp.sh, which builds, starts
hangard and nginx and cleans up). Sub-commands are its steps:

  setup OUT.json         the app and its machine: bench/rr's UDP echo on internal port 5353,
                         a UDP service on public port 5353 (env: HANGAR_PORT, HANGAR_TOKEN,
                         IDS_FILE, IMAGE_TAR)
  nginx SETUP WORK PORT  nginx's config: a `stream` UDP proxy on 127.0.0.1:PORT to the same
                         machine (one upstream, answers relayed back, as Hangar does)
  measure SETUP OUT.json round trips through direct (the machine's 6PN address from the
                         host), Hangar's proxy and nginx: one flow (latency) and FLOWS flows
                         in a closed loop (throughput), ROUNDS rounds, the order turning
                         each round; then wakes from stopped (RUNS), through Hangar only
  report OUT_DIR         the table

Times are in microseconds unless a column says otherwise; pNN is nearest-rank.
"""

import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machines import log, pct  # noqa: E402
from network import api, one_machine  # noqa: E402

UDP_PORT = 5353


def setup(out):
    one_machine("udpb", {
        "init": {"exec": ["/usr/bin/rr", "userve", "[::]:%d" % UDP_PORT]},
        "restart": {"policy": "no"},
        "guest": {"cpus": 1, "memory_mb": 256},
        "services": [{"protocol": "udp", "internal_port": UDP_PORT,
                      "ports": [{"port": UDP_PORT}], "autostart": True,
                      "concurrency": {"type": "connections", "soft_limit": 1000,
                                      "hard_limit": 1000}}]}, out)


def nginx_conf(setup_file, work, port):
    s = json.load(open(setup_file))
    conf = """
daemon off;
worker_processes 2;
pid %(work)s/nginx.pid;
error_log %(work)s/nginx.err warn;
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
events { worker_connections 4096; }
stream {
  server {
    listen 127.0.0.1:%(port)s udp reuseport;
    proxy_pass [%(addr)s]:%(up)d;
    proxy_responses 1;
    proxy_timeout 30s;
  }
}
""" % {"work": work, "port": port, "addr": s["addr"], "up": UDP_PORT}
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(conf)


def rr(addr, secs, flows):
    out = subprocess.run([os.environ["RR"], "uping", addr, str(secs), "64", str(flows)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def targets(s):
    env = os.environ
    return [("direct", "[%s]:%d" % (s["addr"], UDP_PORT)),
            ("hangar", "127.0.0.1:%s" % env["HANGAR_UDP_PORT"]),
            ("nginx", "127.0.0.1:%s" % env["NGINX_UDP_PORT"])]


def ask(addr, timeout):
    """One datagram to `addr`; seconds until its echo, or None."""
    host, port = addr.rsplit(":", 1)
    fam = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        t = time.monotonic()
        s.sendto(b"wake", (host.strip("[]"), int(port)))
        s.recvfrom(2048)
        return time.monotonic() - t
    except OSError:
        return None
    finally:
        s.close()


def measure(setup_file, out):
    env = os.environ
    s = json.load(open(setup_file))
    secs = float(env.get("DURATION", "5"))
    rounds = int(env.get("ROUNDS", "6"))
    flows = int(env.get("FLOWS", "16"))
    runs = int(env.get("RUNS", "20"))
    ts = targets(s)
    res = {"flows": flows, "seconds": secs, "rounds": []}
    for r in range(rounds):
        order = ts[r % len(ts):] + ts[:r % len(ts)]
        one = {}
        for who, addr in order:
            one[who] = {"c1": rr(addr, secs, 1), "many": rr(addr, secs, flows)}
            log("round %d %-7s c=1 p50 %.1f µs p99 %.1f; %d flows %.0f rt/s p50 %.1f µs, lost %d"
                % (r, who, one[who]["c1"]["p50"], one[who]["c1"]["p99"], flows,
                   one[who]["many"]["rps"], one[who]["many"]["p50"],
                   one[who]["c1"]["lost"] + one[who]["many"]["lost"]))
        res["rounds"].append(one)
    # Wakes: the machine stopped, then one datagram through Hangar until its echo.
    a = api()
    base = "/v1/apps/%s/machines/%s" % (s["app"], s["id"])
    hangar = dict(ts)["hangar"]
    wakes, failed = [], 0
    for _ in range(runs):
        a.request("POST", base + "/stop", {})
        a.request("GET", base + "/wait?state=stopped&timeout=60")
        # The next container is prepared after `stopped`: what a later datagram meets.
        time.sleep(0.3)
        took = ask(hangar, 10)
        if took is None:
            failed += 1
            a.request("GET", base + "/wait?state=started&timeout=60")
        else:
            wakes.append(took * 1000)
    res["wake_ms"] = wakes
    res["wake_failed"] = failed
    log("wake from stopped: p50 %.2f ms p99 %.2f ms, failed %d"
        % (pct(wakes, 50), pct(wakes, 99), failed))
    with open(out, "w") as f:
        json.dump(res, f)


def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


def report(d):
    info = json.load(open(os.path.join(d, "info.json")))
    m = json.load(open(os.path.join(d, "measure.json")))
    print("Hangar UDP relay, %s, %s, %s CPUs, kernel %s; load before/after %s / %s"
          % (info["date"], info["rev"], info["nproc"], info["kernel"], info["load_before"],
             info["load_after"]))
    print("tools: %s" % info["tools"])
    print()
    rounds = m["rounds"]
    print("64-byte datagrams echoed by bench/rr in a machine (`rr uping`), %s s per run,"
          " %d rounds, the order turning; medians of the rounds" % (m["seconds"], len(rounds)))
    print()
    print("| path | one flow: p50 | p99 | **added p50** | %d flows: round trips/s | **÷ direct**"
          " | p50 | p99 | lost |" % m["flows"])
    print("|---|---|---|---|---|---|---|---|---|")
    for who in ["direct", "hangar", "nginx"]:
        c1 = [r[who]["c1"] for r in rounds]
        many = [r[who]["many"] for r in rounds]
        added = "—" if who == "direct" else "+%.1f µs" % med(
            [r[who]["c1"]["p50"] - r["direct"]["c1"]["p50"] for r in rounds])
        ratio = "—" if who == "direct" else "%.2f" % med(
            [r[who]["many"]["rps"] / r["direct"]["many"]["rps"] for r in rounds])
        lost = sum(x["lost"] for x in c1 + many)
        print("| %s | %.1f µs | %.1f µs | %s | %.0f | %s | %.1f µs | %.1f µs | %d |" % (
            who, med([x["p50"] for x in c1]), med([x["p99"] for x in c1]), added,
            med([x["rps"] for x in many]), ratio, med([x["p50"] for x in many]),
            med([x["p99"] for x in many]), lost))
    paired = [r["hangar"]["many"]["rps"] / r["nginx"]["many"]["rps"] for r in rounds]
    print()
    print("Hangar's round trips/s ÷ nginx's in the same round, %d flows: **%.3f** (rounds %s)"
          % (m["flows"], med(paired), " / ".join("%.2f" % x for x in paired)))
    w = m["wake_ms"]
    print()
    print("| one datagram through Hangar to a **stopped** machine (next container prepared),"
          " until its echo (n=%d) | p50 | p99 | max | not answered within 10 s |" % len(w))
    print("|---|---|---|---|---|")
    print("| wake + the app's bind + round trip | %.2f ms | %.2f ms | %.2f ms | %d |" % (
        pct(w, 50), pct(w, 99), max(w) if w else float("nan"), m["wake_failed"]))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "setup":
        setup(args[0])
    elif cmd == "nginx":
        nginx_conf(args[0], args[1], args[2])
    elif cmd == "measure":
        measure(args[0], args[1])
    elif cmd == "report":
        report(args[0])
    else:
        sys.exit("unknown step %s" % cmd)


if __name__ == "__main__":
    main()
