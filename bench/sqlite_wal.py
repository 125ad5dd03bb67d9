#!/usr/bin/env python3
"""Commit latency of a machine-row update with SQLite's automatic WAL checkpoint (in the
commit that passes 1,000 pages) and with hangar-store's way (the writer checkpoints only past
10,000 pages; a second connection runs a passive checkpoint every second, `checkpoint.rs`).

    python3 bench/sqlite_wal.py [COMMITS] [RATE] [DIR]   # default 5000 at 1000/s, under /tmp

Same pragmas as the store (WAL, synchronous=NORMAL). Each commit updates a 3 KB row and
appends to a change log, as a machine transition does; commits are paced at RATE per second
(a busy host's store, not a bulk load: the thread checkpoints between them). The database
is on DIR's disk.
"""
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time


def run(path, commits, rate, background):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    c = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    c.execute("pragma journal_mode=WAL")
    c.execute("pragma synchronous=NORMAL")
    c.execute("pragma wal_autocheckpoint=%d" % (10000 if background else 1000))
    c.execute("create table machines(id text primary key, config text, revision int)")
    c.execute("create table changes(revision integer primary key autoincrement, key text)")
    for i in range(50):
        c.execute("insert into machines values(?, ?, 0)", ("m%d" % i, "x" * 3000))
    stop = threading.Event()
    checkpointer = None
    if background:
        def loop():
            b = sqlite3.connect(path, isolation_level=None, timeout=0)
            while not stop.wait(1.0):
                b.execute("pragma wal_checkpoint(PASSIVE)").fetchall()
            b.close()
        checkpointer = threading.Thread(target=loop)
        checkpointer.start()
    lat = []
    start = time.perf_counter()
    for i in range(commits):
        pause = start + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        t0 = time.perf_counter_ns()
        c.execute("begin")
        c.execute("update machines set config = ?, revision = revision + 1 where id = ?",
                  ("y" * 3000 if i % 2 else "z" * 3000, "m%d" % (i % 50)))
        c.execute("insert into changes(key) values('m')")
        c.execute("commit")
        lat.append((time.perf_counter_ns() - t0) / 1000)
    stop.set()
    if checkpointer:
        checkpointer.join()
    c.close()
    lat.sort()
    n = len(lat)
    return lat[n // 2], lat[int(n * 0.99)], lat[int(n * 0.999)], lat[-1]


def main():
    commits = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 1000.0
    base = sys.argv[3] if len(sys.argv) > 3 else None
    d = tempfile.mkdtemp(prefix="hangar-bench-wal-", dir=base)
    try:
        path = os.path.join(d, "state.db")
        print("commit latency over %d commits at %.0f/s (µs): p50 / p99 / p99.9 / max"
              % (commits, rate))
        for label, bg in (("checkpoint in the commit (SQLite's default)", False),
                          ("checkpoint on a thread of its own (hangar-store)", True)):
            print("  %-50s %5.0f / %5.0f / %5.0f / %5.0f" % ((label,) + run(path, commits, rate, bg)))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
