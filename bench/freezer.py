#!/usr/bin/env python3
"""What a cgroup v1 freezer write costs, with and without another cgroup kept frozen.

Linux 6.1+ counts frozen v1 cgroups in a static key: freezing the first and thawing the last
patch kernel text on every CPU. hangar-runtime keeps an empty `_freezer-pin` cgroup frozen
for that reason (ARCHITECTURE.md); this shows the difference on the box it runs on.

    sudo python3 bench/freezer.py [ROUNDS]     # default 40

Needs root and the v1 freezer at /sys/fs/cgroup/freezer. Makes two cgroups named after its
pid and one `sleep` process, and removes them on exit (also on failure).
"""
import os
import subprocess
import sys
import time

ROOT = "/sys/fs/cgroup/freezer"


def timed_write(fd, value):
    t0 = time.perf_counter_ns()
    os.pwrite(fd, value, 0)
    return (time.perf_counter_ns() - t0) / 1000


def state(cg):
    with open(cg + "/freezer.state") as f:
        return f.read().strip()


def measure(cg, rounds):
    fd = os.open(cg + "/freezer.state", os.O_WRONLY)
    freeze, thaw = [], []
    try:
        for _ in range(rounds):
            freeze.append(timed_write(fd, b"FROZEN"))
            while state(cg) != "FROZEN":
                time.sleep(0.001)
            time.sleep(0.005)
            thaw.append(timed_write(fd, b"THAWED"))
            time.sleep(0.002)
    finally:
        os.close(fd)
    freeze.sort()
    thaw.sort()
    return freeze[len(freeze) // 2], thaw[len(thaw) // 2], thaw[int(len(thaw) * 0.9)]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    if not os.path.isdir(ROOT):
        sys.exit("bench/freezer.py: no v1 freezer at %s (a cgroup v2 host has no such key)" % ROOT)
    tag = "hangar-bench-freezer-%d" % os.getpid()
    cg, pin = "%s/%s" % (ROOT, tag), "%s/%s-pin" % (ROOT, tag)
    sleeper = None
    try:
        os.mkdir(cg)
        sleeper = subprocess.Popen(["sleep", "1000"])
        with open(cg + "/cgroup.procs", "w") as f:
            f.write(str(sleeper.pid))
        others = [d for d in os.listdir(ROOT)
                  if os.path.isfile("%s/%s/freezer.state" % (ROOT, d))
                  and state("%s/%s" % (ROOT, d)) != "THAWED"]
        if others:
            print("note: frozen cgroups already here (%s): the key is on either way"
                  % ", ".join(others[:3]))
        f0, t0, t0_90 = measure(cg, rounds)
        os.mkdir(pin)
        with open(pin + "/freezer.state", "w") as f:
            f.write("FROZEN")
        f1, t1, t1_90 = measure(cg, rounds)
        print("write of freezer.state, one sleeping process, p50 (thaw p90) over %d rounds:"
              % rounds)
        print("  no other frozen cgroup:   freeze %4.0f µs, thaw %4.0f µs (p90 %4.0f)"
              % (f0, t0, t0_90))
        print("  an empty one kept frozen: freeze %4.0f µs, thaw %4.0f µs (p90 %4.0f)"
              % (f1, t1, t1_90))
    finally:
        if sleeper:
            sleeper.kill()
            sleeper.wait()
        for d in (pin, cg):
            if os.path.isdir(d):
                try:
                    with open(d + "/freezer.state", "w") as f:
                        f.write("THAWED")
                except OSError:
                    pass
                os.rmdir(d)


if __name__ == "__main__":
    main()
