#!/usr/bin/env python3
"""Wakes of the `cold` machine of a `HOLD` setup of proxy.sh, hangard builds alternated.

    HOLD=1800 SKIP_BUILD=1 bench/proxy.sh &      # then, once it says HOLD:
    source $WORK/env.sh
    N=40 PAIRS=2 python3 bench/wakes.py $WORK OLD_HANGARD NEW_HANGARD

Each round restarts hangard with the next binary (same arguments and environment, as
`proxy.py ab` does; the last one is left running for the cleanup) and runs N of each:
  at_once    stop through the API, `wait?state=stopped`, then a GET through the proxy at once
             (the next container not yet prepared): TTFB
  prepared   the same stop, then the time until the next container's `process.json` appears
  stopped    the same stop, the next container prepared, a 0.1 s pause, then a GET: TTFB, and
             the app's listen → its first accept (the wake's probe)
  suspended  suspend, `wait?state=suspended`, a 0.1 s pause, then a GET: TTFB
PAUSE=SECONDS changes the pause of the `stopped` and `suspended` rows (0.1): past a second,
the store's checkpointer has run in it, as before any wake of an app idle for longer.
ROWS=a,b,... runs only those rows (`listen_to_accept` comes with `stopped`).
Session 15's figures in BENCHMARKS.md came from these rows.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxy  # noqa: E402  (same directory)
from machines import Api, pct  # noqa: E402


def main():
    work, binaries = sys.argv[1], sys.argv[2:]
    env = os.environ
    setup = json.load(open(os.path.join(work, "out", "setup.json")))["cold"]
    app, mid = setup["app"], setup["id"]
    host = "%s.localhost" % app
    port = int(env["PROXY_PORT"])
    api = Api("127.0.0.1", int(env["HANGAR_PORT"]), env["HANGAR_TOKEN"])
    n, pairs = int(env.get("N", "40")), int(env.get("PAIRS", "2"))
    pause = float(env.get("PAUSE", "0.1"))
    wanted = set((env.get("ROWS") or "at_once,prepared,stopped,suspended").split(","))
    cdir = os.path.join(env["HANGAR_DATA"], "runtime", "containers", mid)
    pidfile = os.path.join(work, "hangard.pid")
    pid = int(open(pidfile).read()) if os.path.exists(pidfile) else int(env["HANGAR_PID"])
    args = open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")[:-1]
    henv = dict(x.split(b"=", 1) for x in open("/proc/%d/environ" % pid, "rb").read().split(b"\0")
                if b"=" in x)
    log = open(os.path.join(work, "hangard.log"), "ab")

    child = None

    def restart(binary):
        nonlocal pid, child
        subprocess.run(["kill", "-TERM", str(pid)], check=False)
        if child is not None:
            child.wait()  # ours: reaped, not left a zombie that /proc still shows
        while os.path.exists("/proc/%d" % pid):
            time.sleep(0.05)
        child = subprocess.Popen([binary.encode()] + args[1:], env=henv, stdout=log,
                                 stderr=subprocess.STDOUT, process_group=0)
        pid = child.pid
        with open(pidfile, "w") as f:
            f.write(str(pid))
        time.sleep(3)

    def call(method, path, body=None):
        api.request(method, "/v1/apps/%s/machines/%s/%s" % (app, mid, path), body)

    def get():
        t_fb, _, st, h, t0 = proxy.get("127.0.0.1", port, host)
        if st != 200:
            raise SystemExit("GET answered %d" % st)
        return (t_fb - t0) / 1e6, h

    def stop():
        proxy.get("127.0.0.1", port, host)
        time.sleep(0.05)
        old = proxy.process_record(cdir)
        call("POST", "stop", {})
        call("GET", "wait?state=stopped&timeout=60")
        return old

    def rows():
        r = {"at_once": [], "prepared": [], "stopped": [], "listen_to_accept": [],
             "suspended": []}
        for _ in range(n if "at_once" in wanted else 0):
            stop()
            r["at_once"].append(get()[0])
        for _ in range(n if "prepared" in wanted else 0):
            old = stop()
            t0 = time.monotonic()
            while not proxy.prepared(cdir, old):
                time.sleep(0.0005)
            r["prepared"].append((time.monotonic() - t0) * 1e3)
        for _ in range(n if "stopped" in wanted else 0):
            old = stop()
            while not proxy.prepared(cdir, old):
                time.sleep(0.001)
            time.sleep(pause)
            ttfb, h = get()
            r["stopped"].append(ttfb)
            r["listen_to_accept"].append(
                (int(h["x-first-accept-ns"]) - int(h["x-listen-ns"])) / 1e6)
        for _ in range(n if "suspended" in wanted else 0):
            proxy.get("127.0.0.1", port, host)
            time.sleep(0.05)
            call("POST", "suspend")
            call("GET", "wait?state=suspended&timeout=60")
            time.sleep(pause)
            r["suspended"].append(get()[0])
        return r

    for i in range(pairs):
        for b in binaries:
            restart(b)
            r = rows()
            print("round %d %s:" % (i, b))
            for k, v in r.items():
                if not v:
                    continue
                print("  %-17s p50 %7.2f  p90 %7.2f ms (n=%d)" % (k, pct(v, 50), pct(v, 90), len(v)))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
