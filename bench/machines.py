#!/usr/bin/env python3
"""Measurements of bench/machines.sh (python3 stdlib only). Run through machines.sh, which
builds everything, starts hangard and cleans up; the sub-commands here are its steps:

  image OUT.tar                      a busybox-static image in `docker save` form
  bundle DIR PARENT                  a `runc spec` bundle (busybox rootfs) for runc and libcontainer
  runc BUNDLE ROOT N OUT.json        runc create / start / pause / resume of that bundle
  api OUT.json                       everything through the Machines API (env: see api())
  report OUT_DIR                     the side-by-side table from the JSON files in OUT_DIR
  sweep IDS / bridges IDS HOST_ID    cleanup helpers (destroy what this run made; bridge names)

Latencies are in milliseconds; pNN is nearest-rank over all samples.
"""

import http.client
import json
import math
import os
import queue
import random
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import io
import hashlib

BUSYBOX = "/bin/busybox"
APPLETS = ["sh", "sleep", "true", "httpd", "echo", "cat", "ls"]


def pct(xs, p):
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(1, math.ceil(p / 100.0 * len(s)))
    return s[k - 1]


def summary(xs):
    return {"n": len(xs), "p50": pct(xs, 50), "p99": pct(xs, 99),
            "max": max(xs) if xs else float("nan")}


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# Image and bundle


def make_image(out):
    """A one-layer image: static busybox, applet links, /etc/passwd; `docker save` layout."""
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.USTAR_FORMAT) as t:
        def add(name, data=None, mode=0o644, kind=tarfile.REGTYPE, link=""):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime, ti.linkname = kind, mode, 1_700_000_000, link
            if data is not None:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            else:
                t.addfile(ti)
        for d in ["bin/", "etc/", "tmp/", "root/"]:
            add(d, mode=0o755 if d != "tmp/" else 0o1777, kind=tarfile.DIRTYPE)
        add("bin/busybox", busybox, 0o755)
        for a in APPLETS:
            add("bin/" + a, kind=tarfile.SYMTYPE, link="busybox", mode=0o777)
        add("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", b"root:x:0:\n")
    layer = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sleep", "100000"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [],
                            "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in [("manifest.json", manifest), ("config.json", config),
                           ("layer.tar", layer)]:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(data), 1_700_000_000
            t.addfile(ti, io.BytesIO(data))


def make_bundle(d, parent):
    """`runc spec` bundle over a busybox rootfs, app `sleep 100000`; and `d-true` running
    /bin/true (same rootfs) for the create+start+exit cycle."""
    rootfs = os.path.join(d, "rootfs")
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"]:
        os.makedirs(os.path.join(rootfs, sub), exist_ok=True)
    shutil.copy(BUSYBOX, os.path.join(rootfs, "bin/busybox"))
    for a in APPLETS:
        p = os.path.join(rootfs, "bin", a)
        if not os.path.lexists(p):
            os.symlink("busybox", p)
    with open(os.path.join(rootfs, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    subprocess.run(["runc", "spec"], cwd=d, check=True)
    with open(os.path.join(d, "config.json")) as f:
        spec = json.load(f)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["sleep", "100000"]
    spec["root"]["path"] = rootfs
    spec["linux"]["cgroupsPath"] = "/%s/bundle" % parent
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(spec, f, indent=1)
    true_dir = d + "-true"
    os.makedirs(true_dir, exist_ok=True)
    spec["process"]["args"] = ["/bin/true"]
    with open(os.path.join(true_dir, "config.json"), "w") as f:
        json.dump(spec, f, indent=1)


# ------------------------------------------------------------------------------------------
# runc


def runc_bench(bundle, root, n, out):
    # The container's init inherits runc's stdio: a pipe would keep `runc create` "running"
    # until the app exits, so errors go to a file.
    errlog = open(os.path.join(root + ".log"), "ab")

    def run(*args):
        t = time.perf_counter()
        r = subprocess.run(["runc", "--root", root, *args], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=errlog)
        if r.returncode != 0:
            raise RuntimeError("runc %s failed (%d); see %s.log" % (args[0], r.returncode, root))
        return (time.perf_counter() - t) * 1000

    res = {"create": [], "start": [], "pause": [], "resume": [], "run_true": []}
    for i in range(n):
        cid = "hb-runc-%d-%d" % (os.getpid(), i)
        try:
            res["create"].append(run("create", "--bundle", bundle, cid))
            res["start"].append(run("start", cid))
            res["pause"].append(run("pause", cid))
            res["resume"].append(run("resume", cid))
        finally:
            subprocess.run(["runc", "--root", root, "delete", "-f", cid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for i in range(n):
        cid = "hb-runct-%d-%d" % (os.getpid(), i)
        try:
            res["run_true"].append(run("run", "--bundle", bundle + "-true", cid))
        finally:
            subprocess.run(["runc", "--root", root, "delete", "-f", cid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out, "w") as f:
        json.dump(res, f)


# ------------------------------------------------------------------------------------------
# The Machines API


class Api:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host, port, token, timeout=120):
        self.host, self.port, self.timeout = host, port, timeout
        self.headers = {"Authorization": "Bearer " + token,
                        "Content-Type": "application/json"}
        self.conn = None

    def request(self, method, path, body=None, ok=(200, 201, 202, 204)):
        data = None if body is None else (body if isinstance(body, bytes)
                                          else json.dumps(body).encode())
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port,
                                                       timeout=self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=self.headers)
                r = self.conn.getresponse()
                raw = r.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        if r.status not in ok:
            raise RuntimeError("%s %s -> %d %s" % (method, path, r.status, raw[:300]))
        return json.loads(raw) if raw else None


def machine_config(image):
    return {"image": image, "init": {"exec": ["/bin/sleep", "100000"]},
            "restart": {"policy": "no"}, "guest": {"cpus": 1, "memory_mb": 64}}


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    """CPU seconds of a process and of its reaped children (hangard reaps the `ip` runs,
    the create helpers and the machines' inits)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    own = (int(fields[11]) + int(fields[12])) / tick
    children = (int(fields[13]) + int(fields[14])) / tick
    return own, children


def du_kib(paths):
    paths = [p for p in paths if os.path.exists(p)]
    if not paths:
        return 0
    # -x: the machines' overlay mounts (another filesystem) are not counted, their upper
    # and work directories are.
    out = subprocess.run(["du", "-sxkc", *paths], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1].split()[0])


def cgroup_memory_kib(parent):
    for p in ["/sys/fs/cgroup/memory/%s/memory.usage_in_bytes" % parent,
              "/sys/fs/cgroup/%s/memory.current" % parent]:
        try:
            with open(p) as f:
                return int(f.read()) // 1024
        except OSError:
            pass
    return None


def api_bench(out):
    env = os.environ
    host, port = "127.0.0.1", int(env["HANGAR_PORT"])
    token = env["HANGAR_TOKEN"]
    data = env["HANGAR_DATA"]
    pid = int(env["HANGAR_PID"])
    runs = int(env.get("RUNS", "100"))
    concurrent = int(env.get("CONCURRENT", "200"))
    threads = int(env.get("CLIENT_THREADS", "32"))
    rate = int(env.get("RATE", "1000"))
    duration = float(env.get("DURATION", "10"))
    ids_file = env["IDS_FILE"]
    parent = env["CGROUP_PARENT"]
    tag = "pid%d" % os.getpid()
    api = Api(host, port, token)
    res = {}

    def record(mid):
        with open(ids_file, "a") as f:
            f.write(mid + "\n")

    def new_app(name):
        app = api.request("POST", "/v1/apps", {"app_name": name, "org_slug": "personal"})
        with open(ids_file, "a") as f:
            f.write("app %s\n" % name)
        org = (app.get("organization") or {}).get("internal_numeric_id")
        if org is not None:
            with open(ids_file, "a") as f:
                f.write("org %d\n" % org)
        return name

    lat_app = new_app("bench-lat-%d" % os.getpid())
    many_app = new_app("bench-many-%d" % os.getpid())
    with open(env["IMAGE_TAR"], "rb") as f:
        tar = f.read()
    t = time.perf_counter()
    img = api.request("POST", "/v1/apps/%s/images?tag=%s" % (lat_app, tag), tar)
    res["image_upload_ms"] = (time.perf_counter() - t) * 1000
    image = img["ref"]
    log("image", image, "%.1f ms" % res["image_upload_ms"])

    def create(app, skip_launch=False, a=api):
        body = {"config": machine_config(image)}
        if skip_launch:
            body["skip_launch"] = True
        m = a.request("POST", "/v1/apps/%s/machines" % app, body)
        record(m["id"])
        return m["id"]

    def wait(app, mid, state, a=api):
        a.request("GET", "/v1/apps/%s/machines/%s/wait?state=%s&timeout=60" % (app, mid, state))

    def destroy(app, mid, a=api):
        a.request("DELETE", "/v1/apps/%s/machines/%s?force=true" % (app, mid))
        wait(app, mid, "destroyed", a)

    # First machine of the image (warms the layer cache and the bridge); not counted.
    warm = create(lat_app)
    wait(lat_app, warm, "started")

    # (a) create -> started, and create(skip_launch) -> created, then start -> started.
    log("create->started x%d" % runs)
    c_post, c_total = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        mid = create(lat_app)
        t1 = time.perf_counter()
        wait(lat_app, mid, "started")
        t2 = time.perf_counter()
        c_post.append((t1 - t0) * 1000)
        c_total.append((t2 - t0) * 1000)
        destroy(lat_app, mid)
    res["create_started"] = c_total
    res["create_post"] = c_post
    log("create(skip_launch)->created, start->started x%d" % runs)
    s_created, s_first = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        mid = create(lat_app, skip_launch=True)
        wait(lat_app, mid, "created")
        t1 = time.perf_counter()
        api.request("POST", "/v1/apps/%s/machines/%s/start" % (lat_app, mid))
        wait(lat_app, mid, "started")
        t2 = time.perf_counter()
        s_created.append((t1 - t0) * 1000)
        s_first.append((t2 - t1) * 1000)
        destroy(lat_app, mid)
    res["create_skip_created"] = s_created
    res["start_from_created"] = s_first

    # (b) start from stopped. The agent reports `stopped` first and then prepares the next
    # container (old one deleted, fresh rootfs, `hangar-init` create); a start arriving in
    # that window waits for it. Measured both ways: at once, and after the new container is
    # ready, seen on disk: runtime/containers/<id>/process.json names a new init, and there is
    # no `started` or `final.json` (while the old container is deleted its process.json is
    # still there for a moment: hence the comparison with the old one).
    mid = create(lat_app)
    wait(lat_app, mid, "started")
    cdir = os.path.join(data, "runtime", "containers", mid)

    def process_record():
        try:
            with open(os.path.join(cdir, "process.json")) as f:
                return f.read()
        except OSError:
            return None

    def ready(old):
        rec = process_record()
        return (rec is not None and rec != old
                and not os.path.exists(os.path.join(cdir, "started"))
                and not os.path.exists(os.path.join(cdir, "final.json")))

    # A stop sent within a few ms of `started` can find hangar-init before it installed its
    # signal handlers; the kernel then drops the signal (pid-namespace init) and the stop
    # waits its whole timeout (5 s) before SIGKILL. Not what this row measures: the stops
    # here come SETTLE seconds after `started` (and the count of slow stops is reported).
    settle = float(env.get("SETTLE", "0.05"))
    log("start-from-stopped x%d (ready, then at once)" % runs)
    stop_ms, prep_ms, sfs_ready, sfs_now = [], [], [], []
    for phase in ("ready", "now"):
        for _ in range(runs):
            # The stop comes a moment after `started`: see SETTLE below.
            time.sleep(settle)
            old = process_record()
            t0 = time.perf_counter()
            api.request("POST", "/v1/apps/%s/machines/%s/stop" % (lat_app, mid), {})
            wait(lat_app, mid, "stopped")
            t1 = time.perf_counter()
            if phase == "ready":
                deadline = time.time() + 30
                while not ready(old):
                    if time.time() > deadline:
                        raise RuntimeError("container of %s not prepared after stop" % mid)
                    time.sleep(0.0005)
                prep_ms.append((time.perf_counter() - t1) * 1000)
                stop_ms.append((t1 - t0) * 1000)
            t2 = time.perf_counter()
            api.request("POST", "/v1/apps/%s/machines/%s/start" % (lat_app, mid))
            wait(lat_app, mid, "started")
            t3 = time.perf_counter()
            (sfs_ready if phase == "ready" else sfs_now).append((t3 - t2) * 1000)
    res["stop_stopped"] = stop_ms
    res["prepare_after_stop"] = prep_ms
    res["start_from_stopped"] = sfs_ready
    res["start_right_after_stopped"] = sfs_now

    # (c) suspend -> resume.
    log("suspend/resume x%d" % runs)
    susp, resume = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        api.request("POST", "/v1/apps/%s/machines/%s/suspend" % (lat_app, mid))
        wait(lat_app, mid, "suspended")
        t1 = time.perf_counter()
        api.request("POST", "/v1/apps/%s/machines/%s/start" % (lat_app, mid))
        wait(lat_app, mid, "started")
        t2 = time.perf_counter()
        susp.append((t1 - t0) * 1000)
        resume.append((t2 - t1) * 1000)
    res["suspend_suspended"] = susp
    res["resume_started"] = resume

    # Stop sent at once after `started` (timeout 1 s): how often the signal is lost (the stop
    # then ends with SIGKILL after the timeout).
    log("stop at once after started x%d" % runs)
    quick_stop = []
    for _ in range(runs):
        t0 = time.perf_counter()
        api.request("POST", "/v1/apps/%s/machines/%s/stop" % (lat_app, mid), {"timeout": "1s"})
        wait(lat_app, mid, "stopped")
        quick_stop.append((time.perf_counter() - t0) * 1000)
        api.request("POST", "/v1/apps/%s/machines/%s/start" % (lat_app, mid))
        wait(lat_app, mid, "started")
    res["stop_at_once"] = quick_stop

    # Unloaded single-request latency of the calls (d) and (e) load.
    get_one = []
    for _ in range(200):
        t0 = time.perf_counter()
        api.request("GET", "/v1/apps/%s/machines/%s" % (lat_app, mid))
        get_one.append((time.perf_counter() - t0) * 1000)
    res["get_unloaded"] = get_one
    # A small app for list: 10 machines.
    small = [warm, mid] + [create(lat_app) for _ in range(8)]
    for m in small[2:]:
        wait(lat_app, m, "started")

    # (d) many machines at once.
    log("%d machines created+started with %d client threads" % (concurrent, threads))
    time.sleep(1)
    rss0 = rss_kib(pid)
    disk_paths = [os.path.join(data, "machines"), os.path.join(data, "runtime")]
    disk0 = du_kib(disk_paths)
    mem0 = cgroup_memory_kib(parent)
    cpu0 = cpu_s(pid)
    work = queue.Queue()
    for i in range(concurrent):
        work.put(i)
    many_ids, errors, each = [], [], []
    lock = threading.Lock()

    def worker():
        a = Api(host, port, token)
        while True:
            try:
                work.get_nowait()
            except queue.Empty:
                return
            t0 = time.perf_counter()
            try:
                m = create(many_app, a=a)
                with lock:
                    many_ids.append(m)
                wait(many_app, m, "started", a)
                with lock:
                    each.append((time.perf_counter() - t0) * 1000)
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(str(e)[:200])

    t0 = time.perf_counter()
    ths = [threading.Thread(target=worker) for _ in range(threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    wall = time.perf_counter() - t0
    cpu1 = cpu_s(pid)
    time.sleep(1)
    listed = api.request("GET", "/v1/apps/%s/machines" % many_app)
    started = sum(1 for m in listed if m.get("state") == "started")
    rss1 = rss_kib(pid)
    disk1 = du_kib(disk_paths)
    mem1 = cgroup_memory_kib(parent)
    res["many"] = {
        "n": concurrent, "threads": threads, "ok": len(each), "errors": errors[:5],
        "error_count": len(errors), "started_listed": started, "wall_s": wall,
        "per_s": len(each) / wall if wall > 0 else 0.0, "create_started": each,
        "cpu_ms_per_machine": (cpu1[0] - cpu0[0]) * 1000 / max(1, len(each)),
        "child_cpu_ms_per_machine": (cpu1[1] - cpu0[1]) * 1000 / max(1, len(each)),
        "rss_before_kib": rss0, "rss_after_kib": rss1,
        "rss_per_machine_kib": (rss1 - rss0) / max(1, len(each)),
        "disk_before_kib": disk0, "disk_after_kib": disk1,
        "disk_per_machine_kib": (disk1 - disk0) / max(1, len(each)),
        "cgroup_mem_per_machine_kib": None if mem0 is None or mem1 is None
        else (mem1 - mem0) / max(1, len(each)),
    }
    log("many: %d ok, %d errors, %.1f machines/s" % (len(each), len(errors),
                                                   res["many"]["per_s"]))

    # (e) API at a fixed offered rate (open loop: latency counts from the intended send time).
    def load(paths, label):
        n = int(rate * duration)
        q = queue.Queue()
        lat, errs, lk = [], [0], threading.Lock()

        def w():
            a = Api(host, port, token, timeout=30)
            while True:
                item = q.get()
                if item is None:
                    return
                intended, path = item
                try:
                    a.request("GET", path)
                    d = (time.perf_counter() - intended) * 1000
                    with lk:
                        lat.append(d)
                except Exception:  # noqa: BLE001 - counted
                    with lk:
                        errs[0] += 1

        workers = [threading.Thread(target=w) for _ in range(threads)]
        for th in workers:
            th.start()
        c0 = cpu_s(pid)[0]
        start = time.perf_counter() + 0.05
        sent = 0
        for i in range(n):
            intended = start + i / rate
            delay = intended - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            # Saturated (2 s of requests queued): the rest would only measure the queue.
            if q.qsize() > 2 * rate:
                break
            q.put((intended, paths[i % len(paths)]))
            sent += 1
        for _ in workers:
            q.put(None)
        for th in workers:
            th.join()
        elapsed = time.perf_counter() - start
        cpu = cpu_s(pid)[0] - c0
        log("%s: %d ok, %d errors, p99 %.1f ms" % (label, len(lat), errs[0], pct(lat, 99)))
        return {"offered_rps": rate, "achieved_rps": len(lat) / elapsed, "errors": errs[0],
                "not_sent": n - sent,
                "lat": lat, "seconds": elapsed,
                "hangard_cpu_us_per_req": cpu * 1e6 / max(1, len(lat)),
                "hangard_cpu_cores": cpu / elapsed}

    time.sleep(1)
    res["load_get"] = load(["/v1/apps/%s/machines/%s" % (many_app, m) for m in many_ids],
                           "GET machine")
    res["load_list_10"] = load(["/v1/apps/%s/machines" % lat_app], "list 10")
    res["load_list_many"] = load(["/v1/apps/%s/machines" % many_app],
                                 "list %d" % concurrent)
    res["list_many_bytes"] = len(json.dumps(listed))

    # Tear down through the API (machines.sh checks what is left).
    log("destroying %d machines" % (len(many_ids) + len(small)))
    for app, ids in [(many_app, many_ids), (lat_app, small)]:
        for m in ids:
            try:
                api.request("DELETE", "/v1/apps/%s/machines/%s?force=true" % (app, m))
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                log("destroy", m, e)
        for m in ids:
            try:
                wait(app, m, "destroyed")
            except Exception as e:  # noqa: BLE001
                log("wait destroyed", m, e)
    with open(out, "w") as f:
        json.dump(res, f)


def sweep(ids_file):
    """Cleanup: destroys every machine of the apps this run made, then the apps; prints the
    bridge name of their network (for machines.sh to remove)."""
    env = os.environ
    api = Api("127.0.0.1", int(env["HANGAR_PORT"]), env["HANGAR_TOKEN"], timeout=70)
    apps, orgs = [], set()
    with open(ids_file) as f:
        for line in f:
            w = line.split()
            if len(w) == 2 and w[0] == "app":
                apps.append(w[1])
            elif len(w) == 2 and w[0] == "org":
                orgs.add(int(w[1]))
    for app in apps:
        try:
            ms = api.request("GET", "/v1/apps/%s/machines" % app)
        except Exception as e:  # noqa: BLE001
            log("sweep: listing", app, e)
            continue
        for m in ms:
            try:
                api.request("DELETE", "/v1/apps/%s/machines/%s?force=true" % (app, m["id"]),
                            ok=(200, 202, 412))
            except Exception as e:  # noqa: BLE001
                log("sweep: destroy", m["id"], e)
        for m in ms:
            try:
                api.request("GET", "/v1/apps/%s/machines/%s/wait?state=destroyed&timeout=30"
                            % (app, m["id"]))
            except Exception as e:  # noqa: BLE001
                log("sweep: wait destroyed", m["id"], e)
        try:
            api.request("DELETE", "/v1/apps/%s" % app)
        except Exception as e:  # noqa: BLE001
            log("sweep: delete app", app, e)


def bridges(ids_file, host_id):
    """Bridge names of the networks this run's machines used (hangar-net's naming)."""
    host_id = int(host_id)
    with open(ids_file) as f:
        orgs = {int(w[1]) for w in (line.split() for line in f)
                if len(w) == 2 and w[0] == "org"}
    for org in sorted(orgs):
        mix = (((org << 32) | host_id) * 0x9E3779B97F4A7C15) & (2**64 - 1)
        print("hgrb%08x" % (mix >> 32))


# ------------------------------------------------------------------------------------------
# Report


def report(d):
    def load(name):
        try:
            with open(os.path.join(d, name)) as f:
                return json.load(f)
        except OSError:
            return {}

    def merged(prefix):
        """`prefix.N.json` of every round, sample lists concatenated."""
        out = {}
        for name in sorted(os.listdir(d)):
            if name.startswith(prefix + ".") and name.endswith(".json"):
                for k, v in load(name).items():
                    out.setdefault(k, []).extend(v)
        return out

    api, runc, bare, drv = (load("api.json"), merged("runc"), merged("bare"),
                            merged("driver"))
    info = load("info.json")
    for r in (runc, bare, drv):
        if r.get("create") and r.get("start"):
            r["create_start"] = [c + s for c, s in zip(r["create"], r["start"])]

    def cell(xs):
        if not xs:
            return "—"
        return "%.2f / %.2f" % (pct(xs, 50), pct(xs, 99))

    print()
    print("Hangar machines benchmark — %s, tree %s" % (info.get("date", ""), info.get("rev", "?")))
    print("host: %s cores, kernel %s, load before %s, after %s" % (
        info.get("nproc"), info.get("kernel"), info.get("load_before"),
        info.get("load_after")))
    print("runs per latency row: %s (runtime peers: %s rounds, half before and half after "
          "the API rows); figures are p50 / p99 in ms" % (info.get("runs"), info.get("rounds")))
    print()
    rows = [
        ("create → started (API: POST create, wait started)",
         api.get("create_started"), drv.get("create_start"), bare.get("create_start"),
         runc.get("create_start")),
        ("— POST create answered", api.get("create_post"), None, None, None),
        ("create(skip_launch) → created / runtime create", api.get("create_skip_created"),
         drv.get("create"), bare.get("create"), runc.get("create")),
        ("start of a created machine / runtime start", api.get("start_from_created"),
         drv.get("start"), bare.get("start"), runc.get("start")),
        ("start from stopped (container prepared)", api.get("start_from_stopped"),
         drv.get("start"), bare.get("start"), runc.get("start")),
        ("start right after `stopped` (not yet prepared)",
         api.get("start_right_after_stopped"), None, None, None),
        ("— stop → stopped", api.get("stop_stopped"), None, None, None),
        ("— stopped → next container prepared", api.get("prepare_after_stop"), None, None,
         None),
        ("suspend → suspended / freeze", api.get("suspend_suspended"), drv.get("freeze"),
         bare.get("pause"), runc.get("pause")),
        ("resume (start of suspended) → started / thaw", api.get("resume_started"),
         drv.get("thaw"), bare.get("resume"), runc.get("resume")),
        ("stop sent at once after `started` (timeout 1 s)", api.get("stop_at_once"), None,
         None, None),
        ("create + start + exit of /bin/true", None, drv.get("run_true"),
         bare.get("run_true"), runc.get("run_true")),
        ("GET machine, unloaded, one connection", api.get("get_unloaded"), None, None, None),
    ]
    head = ("measurement", "Hangar API", "LinuxDriver", "libcontainer (bare)", "runc")
    width = max(len(r[0]) for r in rows) + 2
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join([r[0]] + [cell(x) for x in r[1:]]) + " |")
    if api.get("stop_at_once"):
        xs = api["stop_at_once"]
        print()
        print("stops sent at once after `started` that lost their signal (ended by SIGKILL "
              "after the 1 s timeout): %d of %d" % (sum(1 for x in xs if x >= 900), len(xs)))
    if api.get("stop_stopped"):
        xs = api["stop_stopped"]
        print("stops sent %s s after `started` that took > 1 s: %d of %d" % (
            info.get("settle"), sum(1 for x in xs if x >= 1000), len(xs)))
    m = api.get("many")
    if m:
        print()
        print("| %d machines created + started, %d client threads | value |" % (
            m["n"], m["threads"]))
        print("|---|---|")
        print("| succeeded / errors / listed started | %d / %d / %d |" % (
            m["ok"], m["error_count"], m["started_listed"]))
        print("| wall time | %.2f s |" % m["wall_s"])
        print("| machines/s | %.1f |" % m["per_s"])
        print("| create → started under load, p50 / p99 | %s ms |" % cell(m["create_started"]))
        print("| hangard RSS before → after | %.1f → %.1f MiB |" % (
            m["rss_before_kib"] / 1024, m["rss_after_kib"] / 1024))
        print("| hangard RSS per machine | %.1f KiB |" % m["rss_per_machine_kib"])
        print("| CPU per machine: hangard / its reaped children (`ip`, create helper) "
              "| %.1f / %.1f ms |" % (m["cpu_ms_per_machine"], m["child_cpu_ms_per_machine"]))
        if m.get("cgroup_mem_per_machine_kib") is not None:
            print("| machine cgroup memory (init + app + page cache) per machine | %.0f KiB |"
                  % m["cgroup_mem_per_machine_kib"])
        print("| disk per extra machine (machines/ + runtime/, du -x) | %.1f KiB |"
              % m["disk_per_machine_kib"])
        if m["errors"]:
            print("| first errors | %s |" % "; ".join(m["errors"]))
    loads = [("GET machine", api.get("load_get")), ("list machines (10)",
             api.get("load_list_10")),
             ("list machines (%s)" % (m or {}).get("n", "?"), api.get("load_list_many"))]
    if any(v for _, v in loads):
        print()
        print("| open loop, %s req/s for %s s, %s connections | p50 | p99 | max "
              "| achieved req/s | errors | hangard CPU per request |"
              % (info.get("rate"), info.get("duration"), info.get("threads")))
        print("|---|---|---|---|---|---|---|")
        for label, v in loads:
            if not v:
                continue
            xs = v["lat"]
            print("| %s | %.2f ms | %.2f ms | %.1f ms | %.0f%s | %d | %.0f µs |" % (
                label, pct(xs, 50), pct(xs, 99), max(xs) if xs else float("nan"),
                v["achieved_rps"],
                " (saturated: stopped after %d of %d)" % (len(xs) + v["errors"],
                                                         len(xs) + v["errors"] + v["not_sent"])
                if v.get("not_sent") else "",
                v["errors"], v.get("hangard_cpu_us_per_req", 0)))
    if api.get("list_many_bytes"):
        print("\n(list of %s machines: %d bytes of JSON)" % ((m or {}).get("n"),
                                                           api["list_many_bytes"]))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "image":
        make_image(sys.argv[2])
    elif cmd == "bundle":
        make_bundle(sys.argv[2], sys.argv[3])
    elif cmd == "runc":
        runc_bench(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif cmd == "api":
        api_bench(sys.argv[2])
    elif cmd == "sweep":
        sweep(sys.argv[2])
    elif cmd == "bridges":
        bridges(sys.argv[2], sys.argv[3])
    elif cmd == "report":
        report(sys.argv[2])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
