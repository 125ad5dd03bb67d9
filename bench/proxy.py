#!/usr/bin/env python3
"""Measurements of bench/proxy.sh (python3 stdlib; the load comes from wrk and oha). Run
through proxy.sh, which builds everything, starts hangard, nginx and HAProxy and cleans up;
the sub-commands here are its steps:

  rootfs DIR HTTPD                   the image's root: the static backend, /etc/passwd, /tmp
  setup OUT.json                     apps, image upload, machines (env: see setup())
  peers OUT.json WORK                nginx.conf, haproxy.cfg and an ECDSA P-256 certificate
                                     (signed by a CA of its own) for the peers, in WORK
  run OUT.json RESULTS_DIR           every measurement (env: see run())
  report RESULTS_DIR                 the side-by-side tables from the JSON files there
  ab OUT.json WORK BINARY...         paired throughput rounds of hangard builds against nginx
                                     (env: ROUNDS, DURATION, CONNECTIONS; see ab())

Latencies are in milliseconds unless a column says µs; pNN is nearest-rank over all samples.
Only one clock is used for splitting cold starts: CLOCK_MONOTONIC, the same in the machines
(no time namespace) as on the host.
"""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machines import Api, log, pct  # noqa: E402  (same directory)

HTTPD_PORT = 8080


def mono_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


# ------------------------------------------------------------------------------------------
# Image


def make_rootfs(d, httpd):
    for sub in ["etc", "tmp"]:
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    os.chmod(os.path.join(d, "tmp"), 0o1777)
    with open(httpd, "rb") as f:
        data = f.read()
    with open(os.path.join(d, "httpd"), "wb") as f:
        f.write(data)
    os.chmod(os.path.join(d, "httpd"), 0o755)
    with open(os.path.join(d, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/:/httpd\n")
    with open(os.path.join(d, "etc/group"), "w") as f:
        f.write("root:x:0:\n")


# ------------------------------------------------------------------------------------------
# Setup through the Machines API


def service(autostart=True, tls=False):
    ports = [{"port": 80, "handlers": ["http"]}]
    if tls:
        # No SNI from `openssl s_time`: the app's automatic certificate is served to
        # ClientHellos without a known name.
        ports.append({"port": 443, "handlers": ["tls", "http"],
                      "tls_options": {"default_self_signed": True}})
    return {"protocol": "tcp", "internal_port": HTTPD_PORT, "ports": ports,
            "autostart": autostart, "autostop": "off",
            # No proxy limit below what the peers allow (they have none): the balancer's
            # defaults (soft 20, hard 25) would queue 50 connections.
            "concurrency": {"type": "requests", "soft_limit": 10000, "hard_limit": 10000}}


def machine_config(image, env=None, tls=False):
    return {"image": image, "init": {"exec": ["/httpd"]},
            "env": dict({"PORT": str(HTTPD_PORT)}, **(env or {})),
            "restart": {"policy": "no"}, "guest": {"cpus": 1, "memory_mb": 128},
            "services": [service(tls=tls)]}


def setup(out):
    """Env: HANGAR_PORT, HANGAR_TOKEN, IDS_FILE, IMAGE_TAR. Three apps: `bench` (one
    machine: throughput, latency, TLS), `cold` (one machine: stopped and suspended wakes),
    `replay` (machine R answering `fly-replay: instance=T`, and T)."""
    env = os.environ
    api = Api("127.0.0.1", int(env["HANGAR_PORT"]), env["HANGAR_TOKEN"])
    ids_file = env["IDS_FILE"]
    tag = "pid%d" % os.getpid()
    with open(env["IMAGE_TAR"], "rb") as f:
        tar = f.read()

    def note(line):
        with open(ids_file, "a") as f:
            f.write(line + "\n")

    def new_app(name):
        app = api.request("POST", "/v1/apps", {"app_name": name, "org_slug": "personal"})
        note("app %s" % name)
        org = (app.get("organization") or {}).get("internal_numeric_id")
        if org is not None:
            note("org %d" % org)
        img = api.request("POST", "/v1/apps/%s/images?tag=%s" % (name, tag), tar)
        return img["ref"]

    def create(app, image, **kw):
        m = api.request("POST", "/v1/apps/%s/machines" % app,
                        {"config": machine_config(image, **kw)})
        note(m["id"])
        return m["id"]

    def started(app, mid):
        api.request("GET", "/v1/apps/%s/machines/%s/wait?state=started&timeout=60" % (app, mid))
        m = api.request("GET", "/v1/apps/%s/machines/%s" % (app, mid))
        return {"app": app, "id": mid, "addr": m["private_ip"]}

    pid = os.getpid()
    res = {}
    a = "pxb-%d" % pid
    img = new_app(a)
    res["bench"] = started(a, create(a, img, tls=True))
    a = "pxc-%d" % pid
    img = new_app(a)
    res["cold"] = started(a, create(a, img))
    a = "pxr-%d" % pid
    img = new_app(a)
    t = started(a, create(a, img))
    r = started(a, create(a, img, env={"REPLAY": "instance=%s" % t["id"]}))
    res["replay"] = {"app": a, "replayer": r, "target": t}
    # The same in an app of its own whose replayer asks for its decision to be cached.
    a = "pxq-%d" % pid
    img = new_app(a)
    tq = started(a, create(a, img))
    rq = started(a, create(a, img, env={"REPLAY": "instance=%s" % tq["id"],
                                        "REPLAY_CACHE": "/*"}))
    res["replay_cached"] = {"app": a, "replayer": rq, "target": tq}
    for m in [res["bench"], res["cold"], t, r, tq, rq]:
        wait_http(m["addr"], HTTPD_PORT)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    log("machines:", ", ".join("%s %s [%s]" % (k, v["id"], v["addr"])
                               for k, v in [("bench", res["bench"]), ("cold", res["cold"]),
                                            ("replay-R", r), ("replay-T", t),
                                            ("cached-R", rq), ("cached-T", tq)]))


def wait_http(addr, port, timeout=20):
    deadline = time.time() + timeout
    while True:
        try:
            get(addr, port, "x")
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.02)


# ------------------------------------------------------------------------------------------
# The peers' configuration


def peers_config(setup_json, work):
    with open(setup_json) as f:
        s = json.load(f)
    addr = s["bench"]["addr"]
    env = os.environ
    ports = {k: int(env[k]) for k in ["NGINX_PORT", "NGINX_TLS_PORT", "HAPROXY_PORT",
                                      "HAPROXY_TLS_PORT"]}
    # A CA and an ECDSA P-256 leaf it signs, as Hangar's host CA does (rcgen's default key).
    def ossl(*a):
        subprocess.run(["openssl", *a], check=True, cwd=work, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "peer-ca.key", "-out", "peer-ca.pem", "-days", "2",
         "-subj", "/CN=bench peer CA")
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "peer.key", "-out", "peer.csr", "-subj", "/CN=%s.localhost" % s["bench"]["app"])
    ossl("x509", "-req", "-in", "peer.csr", "-CA", "peer-ca.pem", "-CAkey", "peer-ca.key",
         "-CAcreateserial", "-out", "peer.crt", "-days", "2")
    with open(os.path.join(work, "peer.pem"), "w") as f:
        for n in ["peer.crt", "peer-ca.pem", "peer.key"]:
            f.write(open(os.path.join(work, n)).read())
    with open(os.path.join(work, "peer-chain.pem"), "w") as f:
        for n in ["peer.crt", "peer-ca.pem"]:
            f.write(open(os.path.join(work, n)).read())
    nginx = """# bench/proxy.sh: nginx as an equivalent reverse proxy (keep-alive to the backend).
worker_processes 2;
daemon off;
pid %(w)s/nginx.pid;
error_log %(w)s/nginx.err warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path %(w)s/nginx-body;
  proxy_temp_path %(w)s/nginx-proxy;
  fastcgi_temp_path %(w)s/nginx-fastcgi;
  uwsgi_temp_path %(w)s/nginx-uwsgi;
  scgi_temp_path %(w)s/nginx-scgi;
  keepalive_requests 1000000;
  upstream backend { server [%(addr)s]:%(port)d; keepalive 256; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:%(http)d;
    listen 127.0.0.1:%(tls)d ssl;
    ssl_certificate %(w)s/peer-chain.pem;
    ssl_certificate_key %(w)s/peer.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    # The request headers Hangar must add (PLATFORM.md 3.5), so that every proxy does the
    # same work and the backend parses the same request.
    set $fwd_ssl off;
    if ($https) { set $fwd_ssl on; }
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Port $server_port;
      proxy_set_header X-Forwarded-SSL $fwd_ssl;
      proxy_set_header Fly-Client-IP $remote_addr;
      proxy_set_header Fly-Forwarded-Port $server_port;
      proxy_set_header Fly-Region local;
      proxy_set_header Via "1.1 nginx";
      proxy_set_header Fly-Request-Id $request_id;
    }
  }
}
""" % {"w": work, "addr": addr, "port": HTTPD_PORT, "http": ports["NGINX_PORT"],
       "tls": ports["NGINX_TLS_PORT"]}
    haproxy = """# bench/proxy.sh: HAProxy as an equivalent reverse proxy (keep-alive to the backend).
global
  nbthread 2
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend bench
  bind 127.0.0.1:%(http)d
  bind 127.0.0.1:%(tls)d ssl crt %(w)s/peer.pem
  # The request headers Hangar must add (PLATFORM.md 3.5), as for nginx.
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Port %%[dst_port]
  http-request set-header X-Forwarded-SSL off
  http-request set-header X-Forwarded-SSL on if { ssl_fc }
  http-request set-header Fly-Client-IP %%[src]
  http-request set-header Fly-Forwarded-Port %%[dst_port]
  http-request set-header Fly-Region local
  http-request set-header Via "1.1 haproxy"
  http-request set-header Fly-Request-Id %%[uuid]
  default_backend backend
backend backend
  server s1 ipv6@%(addr)s:%(port)d
""" % {"w": work, "addr": addr, "port": HTTPD_PORT, "http": ports["HAPROXY_PORT"],
       "tls": ports["HAPROXY_TLS_PORT"]}
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(nginx)
    with open(os.path.join(work, "haproxy.cfg"), "w") as f:
        f.write(haproxy)


# ------------------------------------------------------------------------------------------
# Helpers


def get(addr, port, host, headers=(), sock_timeout=30):
    """One GET on a new connection. Returns (first byte ns, end ns, status, headers dict,
    start ns); times are CLOCK_MONOTONIC."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    req = "GET / HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n" % (
        host, "".join("%s: %s\r\n" % h for h in headers))
    t0 = mono_ns()
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.settimeout(sock_timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.connect((addr, port))
        s.sendall(req.encode())
        data = s.recv(65536)
        t_fb = mono_ns()
        if not data:
            raise OSError("connection closed without a response")
        while b"\r\n\r\n" not in data:
            more = s.recv(65536)
            if not more:
                break
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        while len(body) < n:
            more = s.recv(65536)
            if not more:
                break
            body += more
        return t_fb, mono_ns(), status, hdrs, t0
    finally:
        s.close()


def proc_cpu_s(pids):
    """utime + stime of processes (all their threads), seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def ctx_switches(pids):
    """Voluntary + involuntary context switches of every thread of processes."""
    total = 0
    for p in pids:
        try:
            tasks = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/status" % (p, t)) as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            total += int(line.split()[1])
            except OSError:
                pass
    return total


def upstream_conns(addr, pids):
    """Established TCP connections to the backend owned by `pids` (the proxy's processes)."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", "dst",
                          "[%s]:%d" % (addr, HTTPD_PORT)],
                         capture_output=True, text=True).stdout
    pids = set(pids)
    return sum(1 for line in out.splitlines()
               if any(int(p) in pids for p in re.findall(r"pid=(\d+)", line)))


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d))
        except OSError:
            pass
    return out


def pids_in_netns(machine_id):
    """Processes in a machine's network namespace (its app: hangar-init and the backend)."""
    try:
        ino = os.stat("/run/netns/hgr-%s" % machine_id).st_ino
    except OSError:
        return []
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat("/proc/%s/ns/net" % d).st_ino == ino:
                    out.append(int(d))
            except OSError:
                pass
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_ticks():
    """(steal, all) ticks of the host's CPUs (/proc/stat): on a VM, the share of its time the
    hypervisor gave to others, which moves throughput by more than any change measured here."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[7], sum(v)


def steal_pct(t0, t1):
    return 100.0 * (t1[0] - t0[0]) / max(1, t1[1] - t0[1])


# ------------------------------------------------------------------------------------------
# Load generators


def wrk(url, host, duration, threads, conns):
    args = ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % duration, "--latency"]
    if host:
        args += ["-H", "Host: %s" % host]
    out = subprocess.run(args + [url], check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(x) for x in sock.groups()) if sock else 0)
    return {"rps": rps, "errors": errors, "raw": out}


def oha(url, host, duration, conns=1, rate=None, headers=(), extra=()):
    """oha's JSON summary; latencies in seconds there, returned in ms."""
    args = [os.environ.get("OHA", "oha"), "--no-tui", "--output-format", "json",
            "-z", "%ds" % duration, "-c", str(conns)]
    if rate:
        args += ["-q", str(rate), "--latency-correction"]
    if host:
        args += ["-H", "Host: %s" % host]
    for h in headers:
        args += ["-H", "%s: %s" % h]
    args += list(extra)
    r = subprocess.run(args + [url], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("oha failed: %s" % r.stderr[-500:])
    j = json.loads(r.stdout)
    lp = j.get("latencyPercentiles", {})
    codes = j.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    bad = sum(v for k, v in codes.items() if not k.startswith("2"))
    # Requests in flight when -z runs out are cancelled: not errors.
    errs = sum(v for k, v in j.get("errorDistribution", {}).items()
               if k != "aborted due to deadline")
    s = j.get("summary", {})
    return {"p50": lp.get("p50", float("nan")) * 1000, "p99": lp.get("p99", float("nan")) * 1000,
            "p999": lp.get("p99.9", float("nan")) * 1000,
            "rps": s.get("requestsPerSec", 0.0), "ok": ok, "errors": bad + errs}


# ------------------------------------------------------------------------------------------
# The run


def run(setup_json, outdir):
    """Env: HANGAR_PORT, HANGAR_TOKEN, HANGAR_PID, HANGAR_DATA, PROXY_PORT, PROXY_TLS_PORT,
    NGINX_PORT, NGINX_TLS_PORT, NGINX_PID, HAPROXY_PORT, HAPROXY_TLS_PORT, HAPROXY_PID,
    DURATION, ROUNDS, RUNS, CONNECTIONS, WRK_THREADS, SETTLE, PERF, HTTPD (the backend binary,
    for its start time on the host)."""
    env = os.environ
    with open(setup_json) as f:
        s = json.load(f)
    duration = int(env.get("DURATION", "10"))
    rounds = int(env.get("ROUNDS", "3"))
    runs = int(env.get("RUNS", "100"))
    conns = int(env.get("CONNECTIONS", "50"))
    wrk_threads = int(env.get("WRK_THREADS", "2"))
    api = Api("127.0.0.1", int(env["HANGAR_PORT"]), env["HANGAR_TOKEN"])
    hangard, nginx, haproxy = (int(env["HANGAR_PID"]), int(env["NGINX_PID"]),
                               int(env["HAPROXY_PID"]))
    nginx_pids = lambda: [nginx] + children(nginx)  # noqa: E731  (workers)
    bench = s["bench"]
    app_host = "%s.localhost" % bench["app"]
    backend_pids = pids_in_netns(bench["id"])
    targets = {
        "direct": ("http://[%s]:%d/" % (bench["addr"], HTTPD_PORT), None, lambda: []),
        "hangar": ("http://127.0.0.1:%s/" % env["PROXY_PORT"], app_host, lambda: [hangard]),
        "nginx": ("http://127.0.0.1:%s/" % env["NGINX_PORT"], app_host, nginx_pids),
        "haproxy": ("http://127.0.0.1:%s/" % env["HAPROXY_PORT"], app_host,
                    lambda: [haproxy]),
    }
    order = ["direct", "hangar", "nginx", "haproxy"]
    res = {"load": {}}

    def save(name, obj):
        with open(os.path.join(outdir, name + ".json"), "w") as f:
            json.dump(obj, f, indent=1)

    # Every target answers before anything is measured.
    for name in order:
        url, host, _ = targets[name]
        r = oha(url, host, 1, conns=2)
        if r["errors"] or not r["ok"]:
            raise RuntimeError("%s does not answer: %s" % (name, r))

    # 1. Throughput: ROUNDS rounds, each target once per round, the order rotated.
    log("throughput: wrk -t%d -c%d, %d s x %d rounds x 4 targets" % (wrk_threads, conns,
                                                                    duration, rounds))
    tp = {n: [] for n in order}
    for r in range(rounds):
        res["load"]["tp_round_%d" % r] = loadavg()
        for name in order[r % 4:] + order[:r % 4]:
            url, host, pids = targets[name]
            c0, b0 = proc_cpu_s(pids()), proc_cpu_s(backend_pids)
            x0, y0 = ctx_switches(pids()), ctx_switches(backend_pids)
            s0 = cpu_ticks()
            t0 = time.perf_counter()
            mid = {}

            def sample():
                time.sleep(duration / 2)
                mid["upstream"] = upstream_conns(bench["addr"], pids())
            th = threading.Thread(target=sample)
            th.start()
            w = wrk(url, host, duration, wrk_threads, conns)
            th.join()
            el = time.perf_counter() - t0
            c1, b1 = proc_cpu_s(pids()), proc_cpu_s(backend_pids)
            x1, y1 = ctx_switches(pids()), ctx_switches(backend_pids)
            n = w["rps"] * duration
            w.update({"round": r, "proxy_cpu_us_per_req": (c1 - c0) * 1e6 / max(1, n),
                      "proxy_cores": (c1 - c0) / el,
                      "backend_cpu_us_per_req": (b1 - b0) * 1e6 / max(1, n),
                      "proxy_ctx_per_req": (x1 - x0) / max(1, n),
                      "backend_ctx_per_req": (y1 - y0) / max(1, n),
                      "backend_conns": mid.get("upstream", 0),
                      "steal_pct": steal_pct(s0, cpu_ticks())})
            del w["raw"]
            tp[name].append(w)
            log("  round %d %-8s %8.0f req/s  proxy %.1f µs CPU/req (%.2f cores), %.2f ctx "
                "switches/req, %d backend connections, errors %d, steal %.0f %%"
                % (r, name, w["rps"], w["proxy_cpu_us_per_req"], w["proxy_cores"],
                   w["proxy_ctx_per_req"], w["backend_conns"], w["errors"], w["steal_pct"]))
    res["throughput"] = tp
    save("throughput", tp)

    # PERF=1: where the CPU goes, hangard next to nginx, under the same wrk load.
    if env.get("PERF") == "1":
        profiles = {}
        for name in ["hangar", "nginx"]:
            url, host, pids = targets[name]
            profiles[name] = perf_profile(url, host, pids(), duration, wrk_threads, conns, outdir,
                                          name)
        with open(os.path.join(outdir, "perf-compare.txt"), "w") as f:
            f.write(perf_compare(profiles))

    # 2. Latency at one connection, then at a fixed rate (50 % of the slowest proxy's max,
    # the same offered rate for every target) with latency correction.
    # At one connection the differences are a few µs: every round measures every target,
    # the order turning each round, and what is compared is the median over rounds of each
    # target's p50 minus direct's p50 in the same round.
    log("latency: oha -c1, %d s each, x%d rounds" % (duration, rounds))
    per_round = {n: [] for n in order}
    for rnd in range(max(1, rounds)):
        turn = order[rnd % len(order):] + order[:rnd % len(order)]
        for name in turn:
            url, host, _ = targets[name]
            r = oha(url, host, duration, conns=1)
            per_round[name].append(r)
            log("  round %d c=1 %-8s p50 %.3f ms p99 %.3f ms" % (rnd, name, r["p50"], r["p99"]))

    def median(v):
        v = sorted(v)
        return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    lat1 = {}
    for name in order:
        rs = per_round[name]
        lat1[name] = {"p50": median([r["p50"] for r in rs]), "p99": median([r["p99"] for r in rs]),
                      "errors": sum(r["errors"] for r in rs),
                      "rounds_p50": [r["p50"] for r in rs],
                      "added_p50": median([r["p50"] - d["p50"]
                                           for r, d in zip(rs, per_round["direct"])])}
    med = {n: sorted(x["rps"] for x in tp[n])[len(tp[n]) // 2] for n in order}
    rate = int(0.5 * min(med[n] for n in order if n != "direct"))
    log("latency at %d req/s (50 %% of the slowest proxy's median max), -c%d, corrected"
        % (rate, conns))
    latq = {}
    for name in order:
        url, host, _ = targets[name]
        latq[name] = oha(url, host, duration, conns=conns, rate=rate)
        log("  q=%d %-8s p50 %.3f ms p99 %.3f ms achieved %.0f/s" % (
            rate, name, latq[name]["p50"], latq[name]["p99"], latq[name]["rps"]))
    save("latency", {"c1": lat1, "rate": rate, "at_rate": latq})

    # 3. Cold starts through the proxy.
    res["load"]["cold"] = loadavg()
    cold = cold_starts(api, s["cold"], int(env["PROXY_PORT"]), env["HANGAR_DATA"], runs)
    cold["app_start_host"] = app_start_on_host(env["HTTPD"], runs)
    save("cold", cold)

    # 4. fly-replay: R answers `fly-replay: instance=T`; against T forced directly.
    rp = s["replay"]
    url = "http://127.0.0.1:%s/" % env["PROXY_PORT"]
    host = "%s.localhost" % rp["app"]
    log("fly-replay: oha -c1, %d s each, x%d rounds" % (duration, rounds))
    replay = {"replayed": [], "direct": [], "cached": []}
    rq = s.get("replay_cached")
    for _ in range(max(1, rounds)):
        replay["replayed"].append(oha(url, host, duration, 1,
                                      headers=[("fly-force-instance-id", rp["replayer"]["id"])]))
        replay["direct"].append(oha(url, host, duration, 1,
                                    headers=[("fly-force-instance-id", rp["target"]["id"])]))
        if rq:
            # R asks for its decision to be cached: after the first request, every one goes
            # to T without reaching R (fly-replay-cache-status: hit).
            replay["cached"].append(oha(url, "%s.localhost" % rq["app"], duration, 1,
                                        headers=[("fly-force-instance-id",
                                                  rq["replayer"]["id"])]))
        log("  replayed p50 %.3f ms, direct to the target p50 %.3f ms%s" % (
            replay["replayed"][-1]["p50"], replay["direct"][-1]["p50"],
            ", cached replay p50 %.3f ms" % replay["cached"][-1]["p50"] if rq else ""))
    # Where the replayed requests ended (the target answers with a body; R's answer is empty).
    _, _, st, h, _ = get("127.0.0.1", int(env["PROXY_PORT"]), host,
                         [("fly-force-instance-id", rp["replayer"]["id"])])
    replay["check"] = {"status": st, "content_length": h.get("content-length"),
                       "fly_replay_leaked": "fly-replay" in h}
    if rq:
        _, _, st, h, _ = get("127.0.0.1", int(env["PROXY_PORT"]), "%s.localhost" % rq["app"],
                             [("fly-force-instance-id", rq["replayer"]["id"])])
        replay["cached_check"] = {"status": st, "content_length": h.get("content-length"),
                                  "cache_headers_leaked": any(k.startswith("fly-replay")
                                                              for k in h)}
    save("replay", replay)

    # 5. TLS handshakes per CPU second: `openssl s_time -new` (a full handshake per
    # connection, no resumption), two clients at once, server CPU from /proc.
    log("TLS: openssl s_time -new x2, %d s per server" % duration)
    tls = {}
    for name, port, pids in [("hangar", env["PROXY_TLS_PORT"], lambda: [hangard]),
                             ("nginx", env["NGINX_TLS_PORT"], nginx_pids),
                             ("haproxy", env["HAPROXY_TLS_PORT"], lambda: [haproxy])]:
        for proto in ["-tls1_3", "-tls1_2"]:
            c0 = proc_cpu_s(pids())
            t0 = time.perf_counter()
            procs = [subprocess.Popen(["openssl", "s_time", "-connect", "127.0.0.1:%s" % port,
                                       "-new", "-time", str(duration), proto],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True) for _ in range(2)]
            outs = [p.communicate()[0] for p in procs]
            el = time.perf_counter() - t0
            cpu = proc_cpu_s(pids()) - c0
            n = 0
            for o in outs:
                m = re.search(r"(\d+) connections in [\d.]+s", o)
                if m:
                    n += int(m.group(1))
                else:
                    raise RuntimeError("s_time against %s: %s" % (name, o[-400:]))
            tls["%s %s" % (name, proto[1:])] = {
                "handshakes": n, "seconds": el, "per_s": n / el, "server_cpu_s": cpu,
                "per_cpu_s": n / cpu if cpu > 0 else float("nan")}
            log("  %-8s %s %6.0f handshakes/s, %.0f per server CPU-second" % (
                name, proto[1:], n / el, n / cpu if cpu > 0 else float("nan")))
    save("tls", tls)
    res["load"]["end"] = loadavg()
    save("load", res["load"])


PERF_HZ = 1999
# User-space symbols of hangard by kind (first match wins).
PERF_KINDS = [
    ("malloc / free / memmove (glibc)", r"malloc|_int_free|cfree|realloc|memmove|memcpy|"
     r"unlink_chunk|memset"),
    ("hyper: h1 parse / encode / dispatch, bodies", r"hyper|httparse|http_body"),
    ("http::HeaderMap: hash, insert, find, names", r"^http::header|<&str as http::header|"
     r"HeaderName|HeaderValue|StandardHeader|parse_hdr"),
    ("tokio: scheduler, wakers, channels, timers", r"tokio|atomic_waker|waker|futures"),
    ("hangar_proxy code", r"hangar_proxy"),
    ("fmt / String building", r"fmt|format_inner|write_str|LowerHex"),
    ("SipHash, hashbrown", r"sip::|hash_one|hashbrown|rustc_entry"),
    ("bytes", r"bytes::"),
    ("libc syscall wrappers, vdso clock", r"__GI___writev|__libc_recv|asynccancel|getrandom|"
     r"epoll|clock_gettime|__vdso|syscall"),
]


def perf_profile(url, host, pids, duration, threads, conns, outdir, name):
    """`perf record` (cpu-clock, PERF_HZ, all threads of `pids`) for `duration` s while wrk
    loads `url`; returns samples by (kernel|user, symbol) and the requests served meanwhile."""
    data = os.path.join(outdir, "perf-%s.data" % name)
    log("perf record of %s under wrk, %d s" % (name, duration))
    w = subprocess.Popen(["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % (duration + 2),
                          "-H", "Host: %s" % host, url],
                         stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    subprocess.run(["perf", "record", "-g", "-F", str(PERF_HZ), "-p", ",".join(map(str, pids)),
                    "-o", data, "--", "sleep", str(duration)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = w.communicate()[0]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    flat = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none",
                           "--sort", "dso,symbol", "-F", "overhead,sample,dso,sym"],
                          capture_output=True, text=True).stdout
    with open(os.path.join(outdir, "perf-%s.txt" % name), "w") as f:
        f.write(flat)
        f.write(subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                                "--percent-limit", "2"], capture_output=True, text=True).stdout)
    os.unlink(data)
    samples = {}
    for line in flat.splitlines():
        m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\S+)\s+\[.\]\s+(.+?)(\s+-\s+-)?\s*$", line)
        if m:
            key = ("kernel" if m.group(2).startswith("[kernel") else "user", m.group(3).strip())
            samples[key] = samples.get(key, 0) + int(m.group(1))
    return {"samples": samples, "requests": rps * duration}


def perf_compare(profiles):
    """µs of CPU per request, kernel and user, hangard next to nginx; hangard's user time by
    kind; the symbols that differ most."""
    per = {}
    for name, p in profiles.items():
        per[name] = {k: n * 1e6 / PERF_HZ / max(1.0, p["requests"])
                     for k, n in p["samples"].items()}
    out = ["CPU per request under wrk (perf cpu-clock at %d Hz; µs per request)" % PERF_HZ, ""]
    out.append("| | " + " | ".join(per) + " |")
    out.append("|---|" + "---|" * len(per))
    for side in ["kernel", "user"]:
        out.append("| %s | %s |" % (side, " | ".join(
            "%.2f" % sum(v for k, v in per[n].items() if k[0] == side) for n in per)))
    out.append("| total | %s |" % " | ".join("%.2f" % sum(per[n].values()) for n in per))
    h = per.get("hangar", {})
    out += ["", "hangard's user space by kind (µs per request):", ""]
    used = set()
    for label, rx in PERF_KINDS:
        t = 0.0
        for k, v in h.items():
            if k[0] == "user" and k not in used and re.search(rx, k[1]):
                t += v
                used.add(k)
        out.append("- %.2f  %s" % (t, label))
    out.append("- %.2f  other" % sum(v for k, v in h.items() if k[0] == "user" and k not in used))
    if "nginx" in per:
        n = per["nginx"]
        keys = sorted(set(h) | set(n), key=lambda k: -(h.get(k, 0) - n.get(k, 0)))
        out += ["", "largest differences hangard − nginx (µs per request):", ""]
        for k in keys[:20]:
            out.append("- %+.2f  (%.2f vs %.2f)  %s %s" % (h.get(k, 0) - n.get(k, 0), h.get(k, 0),
                                                         n.get(k, 0), k[0], k[1][:90]))
    return "\n".join(out) + "\n"


def process_record(cdir):
    """The process record of the container in `cdir` (None when there is none)."""
    try:
        with open(os.path.join(cdir, "process.json")) as f:
            return f.read()
    except OSError:
        return None


def prepared(cdir, old):
    """Whether the container in `cdir` is a new one (process record other than `old`),
    created and not yet started: the next start of a stopped machine is only an exec."""
    rec = process_record(cdir)
    return (rec is not None and rec != old
            and not os.path.exists(os.path.join(cdir, "started"))
            and not os.path.exists(os.path.join(cdir, "final.json")))


def cold_starts(api, m, proxy_port, data, runs):
    """Stop (or suspend) the machine through the API, then time a GET through the proxy."""
    app, mid = m["app"], m["id"]
    host = "%s.localhost" % app
    cdir = os.path.join(data, "runtime", "containers", mid)
    settle = float(os.environ.get("SETTLE", "0.1"))

    def wait(state):
        api.request("GET", "/v1/apps/%s/machines/%s/wait?state=%s&timeout=60" % (app, mid, state))

    def timed(kind):
        t_fb, t_end, st, h, t0 = get("127.0.0.1", proxy_port, host)
        if st != 200:
            raise RuntimeError("cold start (%s) answered %d: %s" % (kind, st, h))
        cs = h.get("hangar-cold-start")
        row = {"ttfb": (t_fb - t0) / 1e6, "total": (t_end - t0) / 1e6,
               "proxy_wait": float(cs[:-2]) if cs and cs.endswith("ms") else None,
               "main_after_send": (int(h["x-start-ns"]) - t0) / 1e6,
               "app_start": (int(h["x-listen-ns"]) - int(h["x-start-ns"])) / 1e6,
               "fb_after_listen": (t_fb - int(h["x-listen-ns"])) / 1e6,
               "accept_after_listen": (int(h["x-first-accept-ns"]) - int(h["x-listen-ns"])) / 1e6,
               "fb_after_accept": (t_fb - int(h["x-first-accept-ns"])) / 1e6}
        return row

    res = {"warm": [], "warm_paused": [], "stopped": [], "suspended": [],
           "stopped_at_once": []}
    log("cold starts x%d: warm (new connection), from stopped, from suspended" % runs)
    for _ in range(runs):
        res["warm"].append(timed("warm"))
    # The same GET after the pause every wake below comes after: an idle box's own cost of
    # waking its CPUs, the client and the proxy (on a VM, several hundred µs), for reference.
    for _ in range(runs):
        time.sleep(settle)
        res["warm_paused"].append(timed("warm after a pause"))
    for _ in range(runs):
        time.sleep(settle)
        old = process_record(cdir)
        api.request("POST", "/v1/apps/%s/machines/%s/stop" % (app, mid), {})
        wait("stopped")
        deadline = time.time() + 10
        while not prepared(cdir, old):
            if time.time() > deadline:
                break
            time.sleep(0.001)
        else:
            time.sleep(settle)
            res["stopped"].append(timed("stopped"))
            continue
        # The agent did not prepare the next container (its log says why): counted, and the
        # wake then pays a create; measured apart.
        log("  container of %s not prepared 10 s after `stopped`" % mid)
        res["prepare_failures"] = res.get("prepare_failures", 0) + 1
        res["stopped_unprepared"] = res.get("stopped_unprepared", []) + [timed("unprepared")]
    for _ in range(runs):
        time.sleep(settle)
        api.request("POST", "/v1/apps/%s/machines/%s/suspend" % (app, mid))
        wait("suspended")
        time.sleep(settle)
        res["suspended"].append(timed("suspended"))
    # A request right after `stopped` (the next container not prepared yet): what a client
    # pays when it comes within ~40 ms of an autostop.
    for _ in range(max(1, runs // 5)):
        time.sleep(settle)
        api.request("POST", "/v1/apps/%s/machines/%s/stop" % (app, mid), {})
        wait("stopped")
        res["stopped_at_once"].append(timed("stopped at once"))
    for k in ["warm", "warm_paused", "stopped", "suspended", "stopped_at_once"]:
        xs = [r["ttfb"] for r in res[k]]
        if not xs:
            continue
        log("  %-16s TTFB p50 %.2f ms p99 %.2f ms" % (k, pct(xs, 50), pct(xs, 99)))
    return res


def app_start_on_host(httpd, runs):
    """The backend's own start measured on the host: fork + exec until it listens (from its
    X-Listen-Ns), and main → listening."""
    out = []
    for _ in range(runs):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        t0 = mono_ns()
        p = subprocess.Popen([httpd], env={"LISTEN": "127.0.0.1:%d" % port},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 5
            while True:
                try:
                    _, _, _, h, _ = get("127.0.0.1", port, "x")
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.0005)
            out.append({"exec_to_listen": (int(h["x-listen-ns"]) - t0) / 1e6,
                        "main_to_listen": (int(h["x-listen-ns"]) - int(h["x-start-ns"])) / 1e6})
        finally:
            p.kill()
            p.wait()
    return out


# ------------------------------------------------------------------------------------------
# Report


def report(d):
    def load(name):
        try:
            with open(os.path.join(d, name)) as f:
                return json.load(f)
        except OSError:
            return {}

    info, tp, lat, cold, replay, tls, ld = (load("info.json"), load("throughput.json"),
                                           load("latency.json"), load("cold.json"),
                                           load("replay.json"), load("tls.json"),
                                           load("load.json"))
    order = ["direct", "hangar", "nginx", "haproxy"]
    print()
    print("Hangar edge proxy benchmark — %s, tree %s" % (info.get("date", ""), info.get("rev", "?")))
    print("host: %s cores, kernel %s; load average before %s, after %s; %s" % (
        info.get("nproc"), info.get("kernel"), info.get("load_before"),
        info.get("load_after"), info.get("tools", "")))
    print("hangard: %s" % info.get("hangard", "?"))
    print("backend: hangar-bench-httpd in one machine; direct = to its 6PN address from the "
          "host; every proxy on 127.0.0.1 with keep-alive to it")
    if tp:
        print()
        print("| wrk -t%s -c%s, %s s × %d rounds | req/s (median) | per round | "
              "**R** (÷ direct, median of per-round R) | proxy CPU per request | "
              "proxy cores used | proxy context switches per request | "
              "its connections to the backend (mid-run) | backend CPU per request | errors |"
              % (info.get("wrk_threads"), info.get("connections"), info.get("duration"),
                 len(tp.get("direct", []))))
        print("|---|---|---|---|---|---|---|---|---|---|")
        direct = tp.get("direct", [])

        def med(v):
            v = sorted(v)
            return v[len(v) // 2] if v else float("nan")

        for n in order:
            xs = tp.get(n, [])
            if not xs:
                continue
            rs = [x["rps"] / dd["rps"] for x, dd in zip(xs, direct) if dd["rps"]]
            proxy = n != "direct"
            print("| %s | %.0f | %s | %s | %s | %s | %s | %s | %.1f µs | %d |" % (
                n, med(x["rps"] for x in xs), " / ".join("%.0f" % x["rps"] for x in xs),
                "**%.2f**" % med(rs) if proxy else "—",
                "%.1f µs" % med(x["proxy_cpu_us_per_req"] for x in xs) if proxy else "—",
                "%.2f" % med(x["proxy_cores"] for x in xs) if proxy else "—",
                "%.2f" % med(x.get("proxy_ctx_per_req", float("nan")) for x in xs)
                if proxy else "—",
                "%d" % med(x.get("backend_conns", 0) for x in xs) if proxy else "—",
                med(x["backend_cpu_us_per_req"] for x in xs),
                sum(x["errors"] for x in xs)))
        # Paired by round (measured minutes apart at most, under the same outside load): less
        # noisy than comparing medians taken over different rounds.
        hg = tp.get("hangar", [])
        for peer in ("nginx", "haproxy"):
            ps = tp.get(peer, [])
            ratios = [h["rps"] / p["rps"] for h, p in zip(hg, ps) if p["rps"]]
            if ratios:
                print("\nHangar's req/s ÷ %s's in the same round: **%.3f** (median of %d; rounds %s)"
                      % (peer, med(ratios), len(ratios), " / ".join("%.2f" % r for r in ratios)),
                      end="")
        print()
        # The hypervisor's share of the box (steal) during each round, all targets: rounds
        # with much of it say more about the neighbours than about the proxies.
        steal = [[x.get("steal_pct") for x in tp.get(n, [])] for n in order]
        if all(v is not None for row in steal for v in row) and steal and steal[0]:
            print("\nCPU steal during the rounds (%% of the box, %s): %s" % (
                " / ".join(order), "; ".join(
                    " / ".join("%.0f" % row[r] for row in steal if r < len(row))
                    for r in range(len(steal[0])))))
    if lat:
        print()
        print("| latency (oha) | c=1 p50 | c=1 p99 | **added p50 at c=1** (median of per-round "
              "differences) | at %d req/s, -c%s, "
              "corrected: p50 | p99 | **added p50** | achieved req/s | errors |"
              % (lat.get("rate", 0), info.get("connections")))
        print("|---|---|---|---|---|---|---|---|---|")
        c1, q = lat.get("c1", {}), lat.get("at_rate", {})
        for n in order:
            a, b = c1.get(n), q.get(n)
            if not a or not b:
                continue
            added = a.get("added_p50", a["p50"] - c1["direct"]["p50"])
            add1 = "—" if n == "direct" else "**%+.0f µs**" % (added * 1000)
            addq = "—" if n == "direct" else "**%+.0f µs**" % ((b["p50"] - q["direct"]["p50"]) * 1000)
            print("| %s | %.0f µs | %.0f µs | %s | %.0f µs | %.0f µs | %s | %.0f | %d |" % (
                n, a["p50"] * 1000, a["p99"] * 1000, add1, b["p50"] * 1000, b["p99"] * 1000,
                addq, b["rps"], a["errors"] + b["errors"]))
        direct = c1.get("direct", {}).get("rounds_p50")
        if direct and len(direct) > 1:
            print()
            print("c=1 added p50 per round: " + "; ".join(
                "%s %s" % (n, " / ".join("%+.0f" % ((x - d) * 1000)
                                         for x, d in zip(c1[n]["rounds_p50"], direct)))
                for n in order if n != "direct" and c1.get(n, {}).get("rounds_p50")) + " µs")
    if cold:
        def cell(rows, key):
            xs = [r[key] for r in rows if r.get(key) is not None]
            if not xs:
                return "—"
            return "%.2f / %.2f" % (pct(xs, 50), pct(xs, 99))

        print()
        print("| GET through the proxy, new connection (p50 / p99 ms, n=%d) | TTFB | "
              "`Hangar-Cold-Start` | **TTFB − app's own start** | request sent → app's "
              "main | app's own start (main → listening) | listening → first connection "
              "accepted (the wake's probe) | → first byte |" % len(cold.get("stopped", [])))
        print("|---|---|---|---|---|---|---|---|")
        for label, k in [("machine started (warm)", "warm"),
                         ("machine started, after the same %.0f ms pause as the wakes"
                          % (float(os.environ.get("SETTLE", "0.1")) * 1000), "warm_paused"),
                         ("**from stopped** (next container prepared)", "stopped"),
                         ("**from suspended**", "suspended"),
                         ("from stopped, sent right after `stopped`", "stopped_at_once")]:
            rows = cold.get(k, [])
            if not rows:
                continue
            fresh = k in ("stopped", "stopped_at_once")
            for r in rows:
                r["ttfb_minus_app"] = r["ttfb"] - r["app_start"] if fresh else r["ttfb"]
            dash = lambda key: cell(rows, key) if fresh else "—"  # noqa: E731
            print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                label, cell(rows, "ttfb"), cell(rows, "proxy_wait"),
                dash("ttfb_minus_app"), dash("main_after_send"), dash("app_start"),
                dash("accept_after_listen"), dash("fb_after_accept")))
        if cold.get("prepare_failures"):
            xs = [r["ttfb"] for r in cold.get("stopped_unprepared", [])]
            print()
            print("**%d of %d stops: the agent did not prepare the next container** (hangard's "
                  "log: `preparing the next start: …`); those wakes paid a create: TTFB %s ms "
                  "(not in the rows above)." % (cold["prepare_failures"], len(cold["stopped"])
                                               + cold["prepare_failures"],
                                               ", ".join("%.1f" % x for x in xs)))
        hs = cold.get("app_start_host", [])
        if hs:
            print()
            print("The backend's own start on the host (n=%d): fork + exec → listening %s ms, "
                  "main → listening %s ms (p50 / p99)." % (
                      len(hs), cell(hs, "exec_to_listen"), cell(hs, "main_to_listen")))
    if replay:
        rp = [x["p50"] for x in replay.get("replayed", [])]
        dp = [x["p50"] for x in replay.get("direct", [])]
        print()
        print("| fly-replay, oha -c1, %s s × %d | p50 (per round) | p99 (median) | requests |"
              % (info.get("duration"), len(rp)))
        print("|---|---|---|---|")
        for label, k in [("R answers `fly-replay: instance=T`, replayed to T", "replayed"),
                         ("R's decision cached (`fly-replay-cache: /*`): straight to T",
                          "cached"),
                         ("`fly-force-instance-id: T` (no replay)", "direct")]:
            xs = replay.get(k, [])
            if not xs:
                continue
            print("| %s | %s µs | %.0f µs | %d |" % (
                label, " / ".join("%.0f" % (x["p50"] * 1000) for x in xs),
                sorted(x["p99"] for x in xs)[len(xs) // 2] * 1000, sum(x["ok"] for x in xs)))
        if rp and dp:
            print("| **replay overhead, p50** | **%+.0f µs** (median of per-round differences) | | |"
                  % (sorted(a - b for a, b in zip(rp, dp))[len(rp) // 2] * 1000))
        cp = [x["p50"] for x in replay.get("cached", [])]
        if cp and dp:
            print("| **cached replay overhead, p50** | **%+.0f µs** (median of per-round "
                  "differences) | | |" % (sorted(a - b for a, b in zip(cp, dp))[len(cp) // 2]
                                          * 1000))
        print("check: replayed answer status %s, body length %s, fly-replay header leaked to "
              "the client: %s" % (replay.get("check", {}).get("status"),
                                 replay.get("check", {}).get("content_length"),
                                 replay.get("check", {}).get("fly_replay_leaked")))
        cc = replay.get("cached_check")
        if cc:
            print("check (cached): status %s, body length %s, fly-replay headers leaked to "
                  "the client: %s" % (cc.get("status"), cc.get("content_length"),
                                      cc.get("cache_headers_leaked")))
    if tls:
        print()
        print("| TLS, `openssl s_time -new` ×2 clients, %s s, ECDSA P-256 leaf + CA | "
              "handshakes/s (box shared with the clients) | **per server CPU-second** | "
              "server CPU used |" % info.get("duration"))
        print("|---|---|---|---|")
        for k, v in tls.items():
            print("| %s | %.0f | **%.0f** | %.2f cores |" % (
                k, v["per_s"], v["per_cpu_s"], v["server_cpu_s"] / v["seconds"]))
    if ld:
        print()
        print("load average during the run: %s" % "; ".join("%s %s" % kv for kv in ld.items()))


# ------------------------------------------------------------------------------------------
# A/B of hangard builds


def ab(setup_json, work, binaries):
    """Paired rounds: each round restarts hangard with each binary in turn (same data dir and
    flags), then runs wrk through it and through nginx (order alternating by round). The
    ratio to nginx in the same round is what is compared: the box's other load moves both.
    hangard stays in the session of nginx and wrk (a process group of its own, not a session):
    with autogroup scheduling, a session of its own would give it a CPU share of its own."""
    with open(setup_json) as f:
        bench = json.load(f)["bench"]
    host = "%s.localhost" % bench["app"]
    env = os.environ
    rounds, dur = int(env["ROUNDS"]), int(env["DURATION"])
    pid = int(env["HANGAR_PID"])
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        args = f.read().split(b"\0")[:-1]
    with open("/proc/%d/environ" % pid, "rb") as f:
        henv = dict(x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x)
    pidfile = os.path.join(work, "hangard.pid")
    log = open(os.path.join(work, "hangard.log"), "ab")

    def restart(binary):
        nonlocal pid
        subprocess.run(["kill", "-TERM", str(pid)], check=False)
        for _ in range(300):
            if not os.path.exists("/proc/%d" % pid):
                break
            time.sleep(0.05)
        p = subprocess.Popen([binary.encode()] + args[1:], env=henv, stdout=log,
                             stderr=subprocess.STDOUT, process_group=0)
        pid = p.pid
        with open(pidfile, "w") as f:
            f.write(str(pid))
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if get("127.0.0.1", int(env["PROXY_PORT"]), host, sock_timeout=1)[2] == 200:
                    return
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.05)
        raise SystemExit("ab: %s did not serve again" % binary)

    def measure(port, h, pids):
        c0, x0, t0, s0 = proc_cpu_s(pids()), ctx_switches(pids()), time.time(), cpu_ticks()
        r = wrk("http://127.0.0.1:%s/" % port, h, dur, int(env["WRK_THREADS"]),
                int(env["CONNECTIONS"]))
        n = r["rps"] * (time.time() - t0)
        out = [r["rps"], (proc_cpu_s(pids()) - c0) * 1e6 / n, (ctx_switches(pids()) - x0) / n,
               steal_pct(s0, cpu_ticks())]
        if paced:
            # The same offered rate for every target: CPU per request without the
            # saturated box's scheduling in it.
            c0 = proc_cpu_s(pids())
            q = oha("http://127.0.0.1:%s/" % port, h, dur, conns=int(env["CONNECTIONS"]),
                    rate=paced)
            out.append((proc_cpu_s(pids()) - c0) * 1e6 / max(q["ok"], 1))
        else:
            out.append(float("nan"))
        return out

    paced = int(env.get("AB_RATE") or 0)
    nginx = int(env["NGINX_PID"])
    results = {b: [] for b in binaries}
    try:
        for rnd in range(rounds):
            for b in binaries:
                restart(b)
                time.sleep(0.5)
                sides = [("hangar", env["PROXY_PORT"], host, lambda: [pid]),
                         ("nginx", env["NGINX_PORT"], "x", lambda: [nginx] + children(nginx))]
                if rnd % 2:
                    sides.reverse()
                got = {name: measure(port, h, pids) for name, port, h, pids in sides}
                hg, ng = got["hangar"], got["nginx"]
                results[b].append((hg[0] / ng[0], hg[1] / ng[1],
                                   hg[4] / ng[4] if paced else float("nan")))
                print("round %d %-24s hangar %7.0f req/s %5.1f us/req %.2f cs/req | nginx %7.0f "
                      "%5.1f us/req %.2f cs/req | req/s ratio %.3f, CPU ratio %.3f | load %s, "
                      "steal %.0f / %.0f %%"
                      % (rnd, os.path.basename(b), hg[0], hg[1], hg[2], ng[0], ng[1], ng[2],
                         hg[0] / ng[0], hg[1] / ng[1], loadavg(), hg[3], ng[3]), flush=True)
                if paced:
                    print("        at %d req/s: hangar %5.1f us/req, nginx %5.1f us/req, ratio "
                          "%.3f" % (paced, hg[4], ng[4], hg[4] / ng[4]), flush=True)
    finally:
        restart(binaries[0])

    def med(v):
        v = sorted(v)
        return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    print()
    print("binary | req/s ÷ nginx's (median) | proxy CPU per request ÷ nginx's (median) | "
          "the same at AB_RATE | rounds")
    for b in binaries:
        print("%s | %.3f | %.3f | %.3f | %s" % (b, med([x[0] for x in results[b]]),
                                                med([x[1] for x in results[b]]),
                                                med([x[2] for x in results[b]]),
                                                " ".join("%.3f" % x[0] for x in results[b])))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "rootfs":
        make_rootfs(sys.argv[2], sys.argv[3])
    elif cmd == "setup":
        setup(sys.argv[2])
    elif cmd == "peers":
        peers_config(sys.argv[2], sys.argv[3])
    elif cmd == "run":
        run(sys.argv[2], sys.argv[3])
    elif cmd == "report":
        report(sys.argv[2])
    elif cmd == "ab":
        ab(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
