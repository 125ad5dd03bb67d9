#!/usr/bin/env python3
"""Measurements of bench/pg.sh (python3 stdlib only; run through pg.sh, which builds, starts
hangard and PostgreSQL and cleans up). Sub-commands are its steps:

  setup OUT.json          the app and its machine (busybox `sleep`), a `pg_tls` service on
                          public port 5432 to internal port 5432 (env: HANGAR_PORT,
                          HANGAR_TOKEN, IDS_FILE, IMAGE_TAR)
  server SETUP WORK       a cluster in WORK/pg (initdb as `postgres`), TLS on with a
                          self-signed certificate, trust from anywhere (the namespace is the
                          bench's own), listening on every address of the machine's
                          namespace; WORK/pg-bin names the server's programs
  ready WORK PID          waits until the server accepts, then `pgbench -i`
  measure SETUP WORK OUT  pgbench -S for DURATION s per run, CLIENTS clients, ROUNDS rounds,
                          the order turning: direct (no TLS), direct with the server's own TLS,
                          through Hangar (pg_tls); kept connections, then `-C` (a new
                          connection per transaction)
  report OUT_DIR          the table
"""

import glob
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machines import log  # noqa: E402
from network import one_machine  # noqa: E402

PG_PORT = 5432


def setup(out):
    one_machine("pgb", {
        "init": {"exec": ["/bin/sleep", "1000000"]},
        "restart": {"policy": "no"},
        "guest": {"cpus": 1, "memory_mb": 256},
        "services": [{"protocol": "tcp", "internal_port": PG_PORT,
                      "ports": [{"port": PG_PORT, "handlers": ["pg_tls"]}],
                      "concurrency": {"type": "connections", "soft_limit": 1000,
                                      "hard_limit": 1000}}]}, out)


def pg_bin():
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                  key=lambda p: int(p.split("/")[4]))
    if not bins:
        raise SystemExit("no PostgreSQL server under /usr/lib/postgresql")
    return os.path.dirname(bins[-1])


def as_postgres(*args, **kw):
    return subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
                          + list(args), check=True, **kw)


def server(work):
    bin_dir = pg_bin()
    pg = os.path.join(work, "pg")
    # The server runs as `postgres`: it must get through the run's dir (mktemp's 0700) to
    # its own.
    os.chmod(work, 0o711)
    os.makedirs(pg)
    subprocess.run(["chown", "postgres:postgres", pg], check=True)
    data = os.path.join(pg, "data")
    as_postgres(os.path.join(bin_dir, "initdb"), "-D", data, "-A", "trust", "-U", "postgres",
                "--no-sync", "-E", "UTF8", "--locale=C", cwd=pg, capture_output=True)
    # The server's own certificate, for the direct TLS runs (P-256, as the proxy's).
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=bench", "-keyout", os.path.join(data, "server.key"),
                    "-out", os.path.join(data, "server.crt")], check=True,
                   capture_output=True)
    subprocess.run(["chown", "postgres:postgres", os.path.join(data, "server.key"),
                    os.path.join(data, "server.crt")], check=True)
    os.chmod(os.path.join(data, "server.key"), 0o600)
    with open(os.path.join(data, "pg_hba.conf"), "a") as f:
        # The bench's own namespace: clients are the host (direct) and the proxy.
        f.write("host all all ::/0 trust\nhost all all 0.0.0.0/0 trust\n")
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write("listen_addresses = '*'\nport = %d\nunix_socket_directories = '%s'\n"
                "ssl = on\nfsync = off\nsynchronous_commit = off\nmax_connections = 100\n"
                "shared_buffers = 64MB\n" % (PG_PORT, pg))
    with open(os.path.join(work, "pg-bin"), "w") as f:
        f.write(bin_dir)


def psql_local(work, *args):
    bin_dir = open(os.path.join(work, "pg-bin")).read()
    return [os.path.join(bin_dir, args[0]), "-h", os.path.join(work, "pg"), "-p", str(PG_PORT),
            "-U", "postgres"] + list(args[1:])


def ready(work, pid):
    deadline = time.time() + 60
    while True:
        r = subprocess.run(psql_local(work, "pg_isready"), capture_output=True)
        if r.returncode == 0:
            break
        try:
            os.kill(int(pid), 0)
        except OSError:
            raise SystemExit("postgres exited:\n" + open(os.path.join(work, "postgres.log")).read())
        if time.time() > deadline:
            raise SystemExit("postgres not ready in 60 s")
        time.sleep(0.1)
    subprocess.run(psql_local(work, "pgbench", "-i", "-s", "4", "-q", "postgres"), check=True,
                   capture_output=True)
    log("postgres ready, pgbench tables made")


def targets(setup_file):
    s = json.load(open(setup_file))
    app_host = "%s.localhost" % s["app"]
    port = os.environ["HANGAR_PG_PORT"]
    common = "user=postgres dbname=postgres gssencmode=disable"
    return {
        "direct": "host=%s port=%d sslmode=disable %s" % (s["addr"], PG_PORT, common),
        "direct_tls": "host=%s port=%d sslmode=require %s" % (s["addr"], PG_PORT, common),
        "hangar": "hostaddr=127.0.0.1 host=%s port=%s sslmode=require %s"
                  % (app_host, port, common),
    }


def pgbench(work, conninfo, duration, clients, new_conn):
    bin_dir = open(os.path.join(work, "pg-bin")).read()
    args = [os.path.join(bin_dir, "pgbench"), "-S", "-n", "-T", str(duration), "-c",
            str(clients), "-j", "2"]
    if new_conn:
        args.append("-C")
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    r = subprocess.run(args + [conninfo], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError("pgbench failed: %s" % r.stderr[-800:])
    tps = float(re.search(r"tps = ([\d.]+)", r.stdout).group(1))
    lat = re.search(r"latency average = ([\d.]+) ms", r.stdout)
    conn = re.search(r"average connection time = ([\d.]+) ms", r.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    return {"tps": tps, "latency_ms": float(lat.group(1)) if lat else None,
            "connect_ms": float(conn.group(1)) if conn else None,
            "failed": int(failed.group(1)) if failed else 0}


def measure(setup_file, work, out):
    env = os.environ
    duration, rounds, clients = int(env["DURATION"]), int(env["ROUNDS"]), int(env["CLIENTS"])
    t = targets(setup_file)
    order = ["direct", "direct_tls", "hangar"]
    res = {"kept": {n: [] for n in order}, "new": {n: [] for n in order},
           "duration": duration, "rounds": rounds, "clients": clients}
    for load, new_conn in [("kept", False), ("new", True)]:
        log("%s connections: pgbench -S -c %d%s, %d s x %d rounds x 3 targets"
            % (load, clients, " -C" if new_conn else "", duration, rounds))
        for r in range(rounds):
            for name in order[r % 3:] + order[:r % 3]:
                x = pgbench(work, t[name], duration, clients, new_conn)
                x["round"] = r
                res[load][name].append(x)
                log("  round %d %-10s %9.0f tps  latency %s ms  connect %s ms  failed %d"
                    % (r, name, x["tps"], x["latency_ms"], x["connect_ms"], x["failed"]))
    with open(out, "w") as f:
        json.dump(res, f, indent=1)


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def report(out_dir):
    m = json.load(open(os.path.join(out_dir, "measure.json")))
    info = json.load(open(os.path.join(out_dir, "info.json")))
    print("## PostgreSQL through pg_tls (bench/pg.sh)\n")
    print("%s, %s, %d cores, kernel %s; %s. Load before/after: %s / %s.\n"
          % (info["date"], info["rev"], info["nproc"], info["kernel"], info["tools"],
             info["load_before"], info["load_after"]))
    print("pgbench -S (select-only), %d clients, %d s x %d rounds, order turning; "
          "medians of the rounds.\n" % (m["clients"], m["duration"], m["rounds"]))
    print("| | direct, no TLS | direct, the server's TLS | Hangar pg_tls (TLS at the edge) |")
    print("|---|---|---|---|")
    names = ["direct", "direct_tls", "hangar"]
    for load, label in [("kept", "kept connections"), ("new", "a new connection per transaction (-C)")]:
        tps = [median(x["tps"] for x in m[load][n]) for n in names]
        print("| %s: tx/s | %s |" % (label, " | ".join("%.0f" % v for v in tps)))
        lat = [median(x["latency_ms"] for x in m[load][n]) for n in names]
        print("| %s: latency average | %s |" % (label, " | ".join(
            "%.3f ms" % v if v is not None else "-" for v in lat)))
        if load == "new":
            conn = [median(x["connect_ms"] for x in m[load][n]) for n in names]
            print("| %s: connection time | %s |" % (label, " | ".join(
                "%.3f ms" % v if v is not None else "-" for v in conn)))
        failed = [sum(x["failed"] for x in m[load][n]) for n in names]
        print("| %s: failed transactions | %s |" % (label, " | ".join(str(v) for v in failed)))
    # Paired by round: Hangar against the server's own TLS.
    for load in ["kept", "new"]:
        ratios = [h["tps"] / d["tps"] for h, d in zip(m[load]["hangar"], m[load]["direct_tls"])
                  if d["tps"]]
        print("\n%s: Hangar ÷ server's TLS, tx/s paired by round: %s (median %.3f)"
              % (load, ", ".join("%.3f" % r for r in ratios), median(ratios) or 0))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "setup":
        setup(sys.argv[2])
    elif cmd == "server":
        server(sys.argv[3])
    elif cmd == "ready":
        ready(sys.argv[2], sys.argv[3])
    elif cmd == "measure":
        measure(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "report":
        report(sys.argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
