#!/usr/bin/env python3
"""Measurements of bench/network.sh (python3 stdlib only; run through network.sh, which builds,
starts hangard and cleans up). Sub-commands are its steps:

  rootfs DIR RR             the image's root: busybox-static, iperf3 with the shared
                            libraries it needs, and the static round-trip tool RR (bench/rr)
  setup OUT.json            apps and machines (env: HANGAR_PORT, HANGAR_TOKEN, IDS_FILE,
                            IMAGE_TAR, DNS_MACHINES)
  unbound SETUP WORK PORT   unbound's config serving the same records as a local zone
  dns SETUP OUT.json        dnsperf against Hangar's DNS and unbound, alternating rounds
  change SETUP OUT.json     state change -> DNS answer change, CHANGES times each way
  net SETUP OUT.json        machine-to-machine TCP throughput (iperf3) and round trips
                            (bench/rr ping) over the bridge, and on host loopback
  report OUT_DIR            the table

Times are in milliseconds unless a column says otherwise; pNN is nearest-rank.
"""

import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machines import Api, log, pct  # noqa: E402

TOOLS = ["/usr/bin/iperf3"]
APPLETS = ["sh", "sleep", "cat", "echo", "ls"]
IPERF_PORT = 5201
RR_PORT = 7100


# ------------------------------------------------------------------------------------------
# The image


def libraries(binary):
    """Absolute paths of the shared objects `binary` loads (ldd), the loader included."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def make_rootfs(d, rr):
    for sub in ["bin", "etc", "tmp", "usr/bin"]:
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    os.chmod(os.path.join(d, "tmp"), 0o1777)
    shutil.copy2("/bin/busybox", os.path.join(d, "bin/busybox"))
    for a in APPLETS:
        os.symlink("busybox", os.path.join(d, "bin", a))
    for tool in TOOLS:
        shutil.copy2(tool, os.path.join(d, tool.lstrip("/")))
        for lib in libraries(tool):
            real = os.path.realpath(lib)
            dest = os.path.join(d, lib.lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if not os.path.exists(dest):
                shutil.copy2(real, dest)
    shutil.copy2(rr, os.path.join(d, "usr/bin/rr"))
    with open(os.path.join(d, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/:/bin/sh\n")
    with open(os.path.join(d, "etc/group"), "w") as f:
        f.write("root:x:0:\n")


# ------------------------------------------------------------------------------------------
# Setup


def api():
    env = os.environ
    return Api("127.0.0.1", int(env["HANGAR_PORT"]), env["HANGAR_TOKEN"])


def one_machine(prefix, config, out):
    """A new app `PREFIX-PID` with the bench image (env IMAGE_TAR) and one machine of
    `config` (its `image` filled in), started; ids noted in IDS_FILE for the cleanup;
    {app, id, addr} written to `out`."""
    env = os.environ
    a = api()
    with open(env["IMAGE_TAR"], "rb") as f:
        tar = f.read()

    def note(line):
        with open(env["IDS_FILE"], "a") as f:
            f.write(line + "\n")

    name = "%s-%d" % (prefix, os.getpid())
    app = a.request("POST", "/v1/apps", {"app_name": name, "org_slug": "personal"})
    note("app %s" % name)
    org = (app.get("organization") or {}).get("internal_numeric_id")
    if org is not None:
        note("org %d" % org)
    image = a.request("POST", "/v1/apps/%s/images?tag=bench" % name, tar)["ref"]
    m = a.request("POST", "/v1/apps/%s/machines" % name, {"config": dict(config, image=image)})
    note(m["id"])
    a.request("GET", "/v1/apps/%s/machines/%s/wait?state=started&timeout=60" % (name, m["id"]))
    m = a.request("GET", "/v1/apps/%s/machines/%s" % (name, m["id"]))
    res = {"app": name, "id": m["id"], "addr": m["private_ip"]}
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    log("machine %s [%s]" % (res["id"], res["addr"]))


def setup(out):
    env = os.environ
    a = api()
    ids_file = env["IDS_FILE"]
    n_dns = int(env.get("DNS_MACHINES", "10"))
    with open(env["IMAGE_TAR"], "rb") as f:
        tar = f.read()

    def note(line):
        with open(ids_file, "a") as f:
            f.write(line + "\n")

    def new_app(name):
        app = a.request("POST", "/v1/apps", {"app_name": name, "org_slug": "personal"})
        note("app %s" % name)
        org = (app.get("organization") or {}).get("internal_numeric_id")
        if org is not None:
            note("org %d" % org)
        return a.request("POST", "/v1/apps/%s/images?tag=bench" % name, tar)["ref"]

    def create(app, image, cmd):
        m = a.request("POST", "/v1/apps/%s/machines" % app, {"config": {
            "image": image, "init": {"exec": cmd}, "restart": {"policy": "no"},
            "guest": {"cpus": 1, "memory_mb": 256}}})
        note(m["id"])
        return m["id"]

    def started(app, mid):
        a.request("GET", "/v1/apps/%s/machines/%s/wait?state=started&timeout=60" % (app, mid))
        m = a.request("GET", "/v1/apps/%s/machines/%s" % (app, mid))
        return {"id": mid, "addr": m["private_ip"], "region": m["region"]}

    pid = os.getpid()
    res = {}
    dns_app = "dnsb-%d" % pid
    img = new_app(dns_app)
    ids = [create(dns_app, img, ["/bin/sleep", "1000000"]) for _ in range(n_dns)]
    res["dns"] = {"app": dns_app, "image": img,
                  "machines": [started(dns_app, i) for i in ids]}
    net_app = "netb-%d" % pid
    img = new_app(net_app)
    server = create(net_app, img, ["/bin/sh", "-c",
                                   "/usr/bin/iperf3 -s -p %d & exec /usr/bin/rr serve '[::]:%d'"
                                   % (IPERF_PORT, RR_PORT)])
    client = create(net_app, img, ["/bin/sleep", "1000000"])
    res["net"] = {"app": net_app, "server": started(net_app, server),
                  "client": started(net_app, client)}
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    log("dns app %s: %d machines; net app %s: server %s [%s], client %s" % (
        dns_app, n_dns, net_app, server, res["net"]["server"]["addr"], client))


# ------------------------------------------------------------------------------------------
# DNS


def records(s):
    """The (name, type, [rdata]) the benchmark asks for: the app, its region, each machine."""
    d = s["dns"]
    app = d["app"]
    addrs = [m["addr"] for m in d["machines"]]
    region = d["machines"][0]["region"]
    out = [("%s.internal" % app, "AAAA", addrs),
           ("global.%s.internal" % app, "AAAA", addrs),
           ("%s.%s.internal" % (region, app), "AAAA", addrs)]
    for m in d["machines"]:
        out.append(("%s.vm.%s.internal" % (m["id"], app), "AAAA", [m["addr"]]))
    return out


def unbound_conf(setup_json, work, port):
    with open(setup_json) as f:
        s = json.load(f)
    lines = ["server:",
             "  interface: 127.0.0.1@%s" % port,
             "  port: %s" % port,
             "  do-ip6: no",
             "  num-threads: 2",
             "  username: \"\"",
             "  chroot: \"\"",
             "  directory: \"%s\"" % work,
             "  pidfile: \"%s/unbound.pid\"" % work,
             "  use-syslog: no",
             "  logfile: \"%s/unbound.log\"" % work,
             "  verbosity: 0",
             "  access-control: 127.0.0.0/8 allow",
             "  so-reuseport: yes",
             "  local-zone: \"internal.\" static"]
    for name, typ, rdata in records(s):
        for r in rdata:
            lines.append("  local-data: \"%s. 5 IN %s %s\"" % (name, typ, r))
    lines += ["remote-control:", "  control-enable: no"]
    with open(os.path.join(work, "unbound.conf"), "w") as f:
        f.write("\n".join(lines) + "\n")


def dnsperf(port, qfile, duration):
    out = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", qfile, "-l", str(duration),
         "-c", "8", "-T", "1", "-q", "200", "-t", "2"],
        capture_output=True, text=True, check=True).stdout
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    lat = float(re.search(r"Average Latency \(s\):\s+([\d.]+)", out).group(1))
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))
    noerror = re.search(r"Response codes:\s+NOERROR (\d+)", out)
    return {"qps": qps, "avg_latency_ms": lat * 1000, "lost": lost,
            "noerror": int(noerror.group(1)) if noerror else 0, "raw": out}


def dns_bench(setup_json, out):
    env = os.environ
    with open(setup_json) as f:
        s = json.load(f)
    work = env["WORK"]
    qfile = os.path.join(work, "queries.txt")
    with open(qfile, "w") as f:
        for name, typ, _ in records(s):
            f.write("%s %s\n" % (name, typ))
    # Both serve the same answers (checked before measuring).
    ports = {"hangar": int(env["DNS_PORT"]), "unbound": int(env["UNBOUND_PORT"])}
    for name, typ, rdata in records(s):
        for who, port in ports.items():
            got = sorted(aaaa(port, name))
            if got != sorted(rdata):
                raise SystemExit("%s answers %s %s with %s, want %s" % (who, name, typ, got,
                                                                        sorted(rdata)))
    duration = float(env.get("DURATION", "10"))
    rounds = int(env.get("ROUNDS", "3"))
    res = {"names": len(records(s)), "rounds": []}
    order = list(ports)
    for r in range(rounds):
        row = {}
        for who in order:
            row[who] = dnsperf(ports[who], qfile, duration)
            log("dns round %d %s: %.0f q/s, %.3f ms avg, %d lost" % (
                r + 1, who, row[who]["qps"], row[who]["avg_latency_ms"], row[who]["lost"]))
        res["rounds"].append(row)
        order.reverse()
    with open(out, "w") as f:
        json.dump(res, f, indent=1)


def query(name, qtype=28):
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return qid, q + b"\x00" + struct.pack(">HH", qtype, 1)


def skip_name(msg, i):
    while True:
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += n + 1


def aaaa(port, name, sock=None, timeout=2.0):
    """The AAAA addresses in the answer to `name` (an empty list for NODATA/NXDOMAIN)."""
    own = sock is None
    if own:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        qid, q = query(name)
        sock.sendto(q, ("127.0.0.1", port))
        while True:
            msg, _ = sock.recvfrom(65535)
            if struct.unpack(">H", msg[:2])[0] == qid:
                break
        qd, an = struct.unpack(">HH", msg[4:8])
        i = 12
        for _ in range(qd):
            i = skip_name(msg, i) + 4
        addrs = []
        for _ in range(an):
            i = skip_name(msg, i)
            typ, _cls, _ttl, rdlen = struct.unpack(">HHIH", msg[i:i + 10])
            i += 10
            if typ == 28 and rdlen == 16:
                addrs.append(socket.inet_ntop(socket.AF_INET6, msg[i:i + 16]))
            i += rdlen
        return addrs
    finally:
        if own:
            sock.close()


def change_bench(setup_json, out):
    """Stops and starts one machine CHANGES times. A stop is a state change when the API has
    written it (its response); a start when the machine is `started` (the wait endpoint
    returns). The latency is from there to the first DNS answer (polled back to back over
    UDP) that drops, or again lists, the machine's address."""
    env = os.environ
    with open(setup_json) as f:
        s = json.load(f)
    port = int(env["DNS_PORT"])
    n = int(env.get("CHANGES", "100"))
    a = api()
    app = s["dns"]["app"]
    m = s["dns"]["machines"][0]
    name = "%s.internal" % app
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def until(present, since):
        deadline = time.perf_counter() + 10
        polls = 0
        while True:
            polls += 1
            if (m["addr"] in aaaa(port, name, sock)) == present:
                return (time.perf_counter() - since) * 1000, polls
            if time.perf_counter() > deadline:
                raise SystemExit("DNS did not change within 10 s")

    res = {"removed_ms": [], "removed_from_request_ms": [], "added_ms": [],
           "added_from_request_ms": [], "polls": []}
    base = "/v1/apps/%s/machines/%s" % (app, m["id"])
    for _ in range(n):
        t0 = time.perf_counter()
        a.request("POST", base + "/stop", {"timeout": "5s"})
        t1 = time.perf_counter()
        dt, polls = until(False, t1)
        res["removed_ms"].append(dt)
        res["removed_from_request_ms"].append(dt + (t1 - t0) * 1000)
        res["polls"].append(polls)
        a.request("GET", base + "/wait?state=stopped&timeout=60")
        t0 = time.perf_counter()
        a.request("POST", base + "/start")
        a.request("GET", base + "/wait?state=started&timeout=60")
        t1 = time.perf_counter()
        # The answer may already list it when the wait returns (both follow the same change).
        dt, polls = until(True, t1)
        res["added_ms"].append(dt)
        res["added_from_request_ms"].append(dt + (t1 - t0) * 1000)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    log("change -> answer: removed p50 %.2f p99 %.2f ms; added p50 %.2f p99 %.2f ms" % (
        pct(res["removed_ms"], 50), pct(res["removed_ms"], 99), pct(res["added_ms"], 50),
        pct(res["added_ms"], 99)))


# ------------------------------------------------------------------------------------------
# Machine to machine


def exec_in(a, app, mid, cmd, timeout, server=None):
    r = a.request("POST", "/v1/apps/%s/machines/%s/exec" % (app, mid),
                  {"command": cmd, "timeout": int(timeout)})
    if r.get("exit_code") not in (0, None):
        logs = ""
        if server:
            logs = a.request("GET", "/v1/apps/%s/machines/%s/logs?tail=20" % (app, server))
        raise SystemExit("%s exited %s: %s %s\nserver's log: %s" % (
            cmd, r.get("exit_code"), r.get("stdout", "")[:500], r.get("stderr", "")[:500],
            json.dumps(logs)[:2000]))
    return r.get("stdout", "")


def iperf_gbps(text):
    j = json.loads(text)
    if "error" in j:
        raise SystemExit("iperf3: %s" % j["error"])
    return j["end"]["sum_received"]["bits_per_second"] / 1e9


def rr_us(text):
    """bench/rr's JSON line: round trips' p50/p99/p99.9/max in µs."""
    return json.loads(text.strip().splitlines()[-1])


def net_bench(setup_json, out):
    env = os.environ
    with open(setup_json) as f:
        s = json.load(f)
    a = api()
    secs = int(env.get("NET_SECONDS", "5"))
    rounds = int(env.get("ROUNDS", "3"))
    n = s["net"]
    app, client, server = n["app"], n["client"]["id"], n["server"]["addr"]
    res = {"bridge_gbps": [], "loopback_gbps": [], "bridge_rtt_us": [], "loopback_rtt_us": []}
    lo_iperf = subprocess.Popen(["iperf3", "-s", "-p", str(int(env["LO_IPERF_PORT"]))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lo_rr = subprocess.Popen([env["RR"], "serve", "[::1]:%d" % int(env["LO_RR_PORT"])],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        for r in range(rounds):
            t = exec_in(a, app, client, ["/usr/bin/iperf3", "-6", "-c", server, "-p",
                                         str(IPERF_PORT), "-t", str(secs), "-J"], secs + 30,
                        n["server"]["id"])
            try:
                res["bridge_gbps"].append(iperf_gbps(t))
            except SystemExit:
                logs = a.request("GET", "/v1/apps/%s/machines/%s/logs?tail=20"
                                 % (app, n["server"]["id"]))
                ps = a.request("GET", "/v1/apps/%s/machines/%s/ps" % (app, n["server"]["id"]))
                log("server's log: %s; processes: %s" % (json.dumps(logs)[:2000],
                                                         json.dumps(ps)[:2000]))
                raise
            t = subprocess.run(["iperf3", "-c", "::1", "-p", env["LO_IPERF_PORT"], "-t",
                                str(secs), "-J"], capture_output=True, text=True,
                               check=True).stdout
            res["loopback_gbps"].append(iperf_gbps(t))
            t = exec_in(a, app, client, ["/usr/bin/rr", "ping", "[%s]:%d" % (server, RR_PORT),
                                         str(secs)], secs + 30, n["server"]["id"])
            res["bridge_rtt_us"].append(rr_us(t))
            t = subprocess.run([env["RR"], "ping", "[::1]:%s" % env["LO_RR_PORT"], str(secs)],
                               capture_output=True, text=True, check=True).stdout
            res["loopback_rtt_us"].append(rr_us(t))
            log("net round %d: bridge %.2f Gbit/s rtt %s; loopback %.2f Gbit/s rtt %s" % (
                r + 1, res["bridge_gbps"][-1], res["bridge_rtt_us"][-1],
                res["loopback_gbps"][-1], res["loopback_rtt_us"][-1]))
    finally:
        for p in (lo_iperf, lo_rr):
            p.terminate()
            p.wait()
    with open(out, "w") as f:
        json.dump(res, f, indent=1)


# ------------------------------------------------------------------------------------------
# Report


def report(d):
    def load(name):
        try:
            with open(os.path.join(d, name)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    info = load("info.json") or {}
    print("Hangar private networking, %s, %s, %s CPUs, kernel %s; load before/after %s / %s"
          % (info.get("date"), info.get("rev"), info.get("nproc"), info.get("kernel"),
             info.get("load_before"), info.get("load_after")))
    print("tools: %s" % info.get("tools"))
    dns = load("dns.json")
    if dns:
        print()
        print("`.internal` AAAA queries (%d names; dnsperf -c 8 -T 1 -q 200, %s s x %d rounds,"
              " alternating)" % (dns["names"], os.environ.get("DURATION", "10"),
                                 len(dns["rounds"])))
        print("| server | queries/s (median of rounds) | avg latency ms | lost |")
        print("|---|---|---|---|")
        for who in ["hangar", "unbound"]:
            qps = sorted(r[who]["qps"] for r in dns["rounds"])
            lat = sorted(r[who]["avg_latency_ms"] for r in dns["rounds"])
            lost = sum(r[who]["lost"] for r in dns["rounds"])
            print("| %s | %.0f | %.3f | %d |" % (who, qps[len(qps) // 2], lat[len(lat) // 2],
                                                  lost))
    ch = load("change.json")
    if ch:
        print()
        print("state change -> DNS answer changes (%d changes each way)" % len(ch["removed_ms"]))
        print("| change | p50 ms | p99 ms | max ms | p99 from the API request, ms |")
        print("|---|---|---|---|---|")
        for label, k in [("stop (machine leaves the answer)", "removed"),
                         ("start (machine joins the answer)", "added")]:
            xs = ch[k + "_ms"]
            print("| %s | %.2f | %.2f | %.2f | %.2f |" % (
                label, pct(xs, 50), pct(xs, 99), max(xs), pct(ch[k + "_from_request_ms"], 99)))
    net = load("net.json")
    if net:
        print()
        print("machine to machine over the bridge vs host loopback (%d rounds, median)"
              % len(net["bridge_gbps"]))
        print("| path | TCP Gbit/s (iperf3) | RTT p50 µs | RTT p99 µs (bench/rr, 64 B) |")
        print("|---|---|---|---|")
        for label, k in [("machine -> machine (bridge, 6PN)", "bridge"),
                         ("host loopback (::1)", "loopback")]:
            g = sorted(net[k + "_gbps"])
            p50 = sorted(x.get("p50", float("nan")) for x in net[k + "_rtt_us"])
            p99 = sorted(x.get("p99", float("nan")) for x in net[k + "_rtt_us"])
            m = len(g) // 2
            print("| %s | %.2f | %.1f | %.1f |" % (label, g[m], p50[m], p99[m]))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "rootfs":
        make_rootfs(sys.argv[2], sys.argv[3])
    elif cmd == "setup":
        setup(sys.argv[2])
    elif cmd == "unbound":
        unbound_conf(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "dns":
        dns_bench(sys.argv[2], sys.argv[3])
    elif cmd == "change":
        change_bench(sys.argv[2], sys.argv[3])
    elif cmd == "net":
        net_bench(sys.argv[2], sys.argv[3])
    elif cmd == "report":
        report(sys.argv[2])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
