#!/usr/bin/env python3
"""Measurements of bench/deploy.sh (python3 stdlib only): `hangar deploy` next to the same
steps done by direct Machines API calls, in one run, against the hangard deploy.sh started.

  run OUT.json       the repetitions (env REPS, 7), after timing 30 starts of
                     `hangar --version` (the floor of any CLI command)
  report OUT.json    the side-by-side table

Per repetition, two fresh apps (one per column; which column goes first alternates):

  first deploy   the CLI: `hangar deploy -c DIR --image REF` (app created, two machines for
                 the HA http service, each waited for until started);
                 the API: POST /v1/apps, then per machine POST …/machines and GET …/wait
                 (state=started).
  rolling (3)    after both apps were scaled to 3 machines (not timed):
                 the CLI: `hangar deploy -c DIR --image REF --strategy rolling -e V=<n>`
                 (max_unavailable 0.33: one machine at a time);
                 the API: per machine: cordon, the same 200 ms drain pause the CLI makes,
                 lease, update (same config, new env), release, GET …/wait (started, the new
                 instance), uncordon.

The image is uploaded once before (already present, as the issue asks). Wall times in ms
(time.perf_counter around the subprocess, or around the calls); p50 is nearest-rank.
"""

import copy
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machines import Api, log, make_image, pct  # noqa: E402

FLY_TOML = """app = "{app}"
primary_region = "local"

[env]
  V = "0"

[http_service]
  internal_port = 8080
  auto_stop_machines = "off"
  auto_start_machines = false
"""


def run(out):
    env = os.environ
    port, token = int(env["HANGAR_PORT"]), env["HANGAR_TOKEN"]
    hangar, work = env["HANGAR_BIN"], env["WORK"]
    reps = int(env.get("REPS", "7"))
    ids_file = env["IDS_FILE"]
    api = Api("127.0.0.1", port, token)
    cli_env = dict(env, HANGAR_API_URL="http://127.0.0.1:%d" % port, HANGAR_API_TOKEN=token)

    def note(line):
        with open(ids_file, "a") as f:
            f.write(line + "\n")

    def remember(app, a=None):
        note("app " + app)
        info = (a or api).request("GET", "/v1/apps/" + app)
        org = (info.get("organization") or {}).get("internal_numeric_id")
        if org is not None:
            note("org %d" % org)
        for m in (a or api).request("GET", "/v1/apps/%s/machines" % app):
            note(m["id"])

    def hangar_cmd(*args):
        p = subprocess.run([hangar, *args], env=cli_env, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("hangar %s: exit %d\n%s%s" % (" ".join(args), p.returncode,
                                                             p.stdout, p.stderr))
        return p.stdout

    # The image, once: uploaded into a holder app of the same org (refs are org-scoped).
    img_tar = os.path.join(work, "image.tar")
    make_image(img_tar)
    holder = "bench-image-%d" % os.getpid()
    api.request("POST", "/v1/apps", {"app_name": holder, "org_slug": "personal"})
    note("app " + holder)
    with open(img_tar, "rb") as f:
        ref = api.request("POST", "/v1/apps/%s/images?tag=bench" % holder, f.read())["ref"]
    log("image", ref)

    # The machine config the CLI derives from the same fly.toml, for the API column.
    cfg_dir = os.path.join(work, "template")
    os.makedirs(cfg_dir, exist_ok=True)
    with open(os.path.join(cfg_dir, "fly.toml"), "w") as f:
        f.write(FLY_TOML.format(app="template"))
    template = json.loads(hangar_cmd("config", "machines", "-c", cfg_dir, "-g", "app",
                                     "--image", ref))

    def wait(a, app, mid, state, instance=None):
        q = "state=%s&timeout=60" % state
        if instance:
            q += "&instance_id=" + instance
        a.request("GET", "/v1/apps/%s/machines/%s/wait?%s" % (app, mid, q))

    # --- the CLI column
    def cli_first(app, d):
        t = time.perf_counter()
        hangar_cmd("deploy", "-c", d, "--image", ref)
        return (time.perf_counter() - t) * 1000

    def cli_rolling(app, d, n):
        t = time.perf_counter()
        hangar_cmd("deploy", "-c", d, "--image", ref, "--strategy", "rolling", "-e", "V=%d" % n)
        return (time.perf_counter() - t) * 1000

    # --- the API column
    def config_for(app, v):
        c = copy.deepcopy(template)
        c["env"]["V"] = v
        return c

    def api_first(app):
        a = Api("127.0.0.1", port, token)
        t = time.perf_counter()
        a.request("POST", "/v1/apps", {"app_name": app, "org_slug": "personal"})
        for _ in range(2):
            m = a.request("POST", "/v1/apps/%s/machines" % app,
                          {"config": config_for(app, "0"), "region": "local"})
            wait(a, app, m["id"], "started")
        return (time.perf_counter() - t) * 1000

    def api_rolling(app, n):
        a = Api("127.0.0.1", port, token)
        t = time.perf_counter()
        for m in a.request("GET", "/v1/apps/%s/machines" % app):
            base = "/v1/apps/%s/machines/%s" % (app, m["id"])
            a.request("POST", base + "/cordon", {})
            time.sleep(0.2)
            nonce = a.request("POST", base + "/lease",
                              {"ttl": 330, "description": "bench"})["data"]["nonce"]
            a.headers["fly-machine-lease-nonce"] = nonce
            try:
                new = a.request("POST", base, {"config": config_for(app, str(n))})
                a.request("DELETE", base + "/lease")
            finally:
                del a.headers["fly-machine-lease-nonce"]
            wait(a, app, m["id"], "started", new["instance_id"])
            a.request("POST", base + "/uncordon", {})
        return (time.perf_counter() - t) * 1000

    def scale_to_3(app, d):
        hangar_cmd("scale", "count", "3", "-a", app)
        for m in api.request("GET", "/v1/apps/%s/machines" % app):
            wait(api, app, m["id"], "started")

    def delete_app(app):
        for m in api.request("GET", "/v1/apps/%s/machines" % app):
            api.request("DELETE", "/v1/apps/%s/machines/%s?force=true" % (app, m["id"]))
        for m in api.request("GET", "/v1/apps/%s/machines" % app):
            wait(api, app, m["id"], "destroyed")
        api.request("DELETE", "/v1/apps/" + app)

    # The floor of any CLI command: starting the process the way the runs below do.
    spawn = []
    for _ in range(30):
        t = time.perf_counter()
        hangar_cmd("--version")
        spawn.append((time.perf_counter() - t) * 1000)
    res = {"cli": {"first": [], "rolling": []}, "api": {"first": [], "rolling": []},
           "reps": reps, "image": ref, "spawn": spawn}
    tag = os.getpid()
    for i in range(reps + 1):  # the first repetition warms up and is not counted
        cli_app, api_app = "bcli-%d-%d" % (tag, i), "bapi-%d-%d" % (tag, i)
        d = os.path.join(work, cli_app)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "fly.toml"), "w") as f:
            f.write(FLY_TOML.format(app=cli_app))
        note("app " + cli_app)
        note("app " + api_app)
        order = ["cli", "api"] if i % 2 == 0 else ["api", "cli"]
        first, rolling = {}, {}
        for who in order:
            first[who] = cli_first(cli_app, d) if who == "cli" else api_first(api_app)
        remember(cli_app)
        remember(api_app)
        scale_to_3(cli_app, d)
        scale_to_3(api_app, None)
        remember(cli_app)
        remember(api_app)
        for who in order:
            rolling[who] = (cli_rolling(cli_app, d, i + 1) if who == "cli"
                            else api_rolling(api_app, i + 1))
        for app in (cli_app, api_app):
            ms = api.request("GET", "/v1/apps/%s/machines" % app)
            assert len(ms) == 3 and all(m["config"]["env"]["V"] == str(i + 1) for m in ms), ms
        log("rep %d%s: first cli %.0f api %.0f ms; rolling(3) cli %.0f api %.0f ms"
            % (i, " (warm-up)" if i == 0 else "", first["cli"], first["api"],
               rolling["cli"], rolling["api"]))
        if i > 0:
            for who in ("cli", "api"):
                res[who]["first"].append(first[who])
                res[who]["rolling"].append(rolling[who])
        delete_app(cli_app)
        delete_app(api_app)
    with open(out, "w") as f:
        json.dump(res, f)


def report(path):
    with open(path) as f:
        r = json.load(f)
    print("| step | `hangar deploy` p50 | direct API calls p50 | CLI overhead (p50s) "
          "| paired difference p50 | samples (ms, CLI / API) |")
    print("|---|---:|---:|---:|---:|---|")
    for step, name in [("first", "first deploy (app + 2 machines, HA)"),
                       ("rolling", "rolling deploy of 3 machines")]:
        c, a = r["cli"][step], r["api"][step]
        pc, pa = pct(c, 50), pct(a, 50)
        # Each repetition ran both columns back to back: their difference cancels drift.
        diff = sorted(x - y for x, y in zip(c, a))
        print("| %s | %.0f ms | %.0f ms | %+.1f %% | %+.0f ms | %s / %s |" % (
            name, pc, pa, (pc / pa - 1) * 100, diff[(len(diff) - 1) // 2],
            " ".join("%.0f" % x for x in c), " ".join("%.0f" % x for x in a)))
    print()
    print("%d repetitions after one warm-up, columns alternating which goes first. Starting "
          "`hangar --version` the same way (subprocess from python) takes %.1f ms (p50 of %d): "
          "a floor every CLI run pays." % (r["reps"], pct(r.get("spawn", []), 50),
                                           len(r.get("spawn", []))))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "run":
        run(sys.argv[2])
    elif cmd == "report":
        report(sys.argv[2])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
