#!/usr/bin/env bash
# Issue 4's edge proxy benchmarks, side by side in one run (see BENCHMARKS.md, "The edge
# proxy"): a release `hangard`'s proxy next to nginx and HAProxy configured as equivalent
# reverse proxies (keep-alive to the backend), all in front of the same backend process (the
# static `bench/httpd` server in one machine), and direct to it.
#
#   sudo bench/proxy.sh                              # full run (DURATION=10 ROUNDS=3 RUNS=100)
#   DURATION=3 RUNS=10 ROUNDS=1 bench/proxy.sh       # quick
#
# Measures: throughput (wrk) and R = req/s via a proxy ÷ req/s direct; latency at one
# connection and at a fixed rate (oha, latency-corrected); cold starts through the proxy from
# stopped and from suspended machines (stop/suspend through the API, then a GET), split with
# the backend's own start; fly-replay overhead; TLS handshakes per server CPU-second.
#
# Environment: DURATION (seconds per load step, 10), ROUNDS (throughput and replay rounds,
# targets rotated each round, 3), RUNS (cold-start samples per row, 100), CONNECTIONS (50),
# WRK_THREADS (2), SETTLE (seconds between steps of a cold-start sample, 0.1), PERF=1 (also
# `perf record` of hangard and of nginx under the same wrk load: RESULTS/perf-compare.txt, µs
# of CPU per request by kernel / user and by kind), SKIP_BUILD=1 (use what is built; HANGARD,
# HANGAR, INIT name other binaries), HOLD=SECONDS (set everything up, keep it up that long for
# a look by hand, measure nothing), AB="HANGARD_A HANGARD_B ..." (measure only throughput:
# ROUNDS paired rounds, each restarting hangard with each binary in turn on the same setup and
# running wrk through it and through nginx; RESULTS/ab.txt; AB_RATE=N adds CPU per request
# at N req/s offered by oha to each, the same for all), RESULTS (where the report and
# the raw samples are copied, /tmp/hangar-bench-proxy-results). Needs root, cgroups, overlayfs; installs nginx-light,
# haproxy, wrk (Debian) and oha (crates.io, pinned, into target/bench-tools) if missing.
# Everything it makes (temp dir, hangard, nginx, HAProxy, machines, netns, veths, bridge,
# cgroups, mounts, nftables tables) is removed on exit, also on failure, and the exit checks
# that nothing is left.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# shellcheck source=../scripts/lib.sh
source scripts/lib.sh
# shellcheck source=lib.sh
source bench/lib.sh
[ "$(id -u)" -eq 0 ] || { echo "bench/proxy.sh: run as root" >&2; exit 2; }

export DURATION="${DURATION:-10}" ROUNDS="${ROUNDS:-3}" RUNS="${RUNS:-100}"
export CONNECTIONS="${CONNECTIONS:-50}" WRK_THREADS="${WRK_THREADS:-2}"
OHA_VERSION=1.16.0

apt_install nginx-light haproxy wrk openssl libseccomp-dev pkg-config iproute2 nftables
ensure_rust
INIT="${INIT:-$ROOT/target/init/x86_64-unknown-linux-gnu/release/hangar-init}"
HANGARD="${HANGARD:-$CARGO_TARGET_DIR/release/hangard}"
HANGAR="${HANGAR:-$CARGO_TARGET_DIR/release/hangar}"
HTTPD="$ROOT/target/bench/x86_64-unknown-linux-gnu/release/hangar-bench-httpd"
export OHA="$ROOT/target/bench-tools/bin/oha"
if ! "$OHA" --version 2>/dev/null | grep -q "$OHA_VERSION"; then
  step "installing oha $OHA_VERSION (target/bench-tools)"
  cargo install --locked oha --version "$OHA_VERSION" --root "$ROOT/target/bench-tools"
fi
build_release hangar-daemon hangar-cli
build_static_tool httpd "the backend"
need_binaries "$HANGARD" "$HANGAR" "$INIT" "$HTTPD" "$OHA"

bench_setup proxy
NPID="" XPID=""
export IDS_FILE="$IDS" HANGAR_DATA="$DATA" HTTPD
export IMAGE_TAR="$WORK/image.tar"

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

step "the image: bench/httpd packed with hangar image pack"
python3 bench/proxy.py rootfs "$WORK/rootfs" "$HTTPD"
"$HANGAR" image pack "$WORK/rootfs" -o "$IMAGE_TAR" --tag bench --cmd /httpd \
  -e PORT=8080 --expose 8080/tcp >/dev/null

step "starting hangard"
# The DNS role (when this hangard has it) is not measured here: off, so that it binds nothing.
NO_DNS=()
"$HANGARD" --help | grep -q -- "--no-dns" && NO_DNS=(--no-dns)
export PROXY_PORT="$(free_port)" PROXY_TLS_PORT="$(free_port)"
start_hangard --ipv4-pool none "${NO_DNS[@]}" --proxy-bind 127.0.0.1 \
  --proxy-port "80=$PROXY_PORT,443=$PROXY_TLS_PORT" --autostop-interval 1h

step "apps and machines"
if ! python3 bench/proxy.py setup "$OUT/setup.json"; then
  tail -n 30 "$WORK/hangard.log" >&2
  exit 1
fi

step "starting nginx and HAProxy (same backend, keep-alive upstream)"
export NGINX_PORT="$(free_port)" NGINX_TLS_PORT="$(free_port)"
export HAPROXY_PORT="$(free_port)" HAPROXY_TLS_PORT="$(free_port)"
python3 bench/proxy.py peers "$OUT/setup.json" "$WORK"
nginx -t -c "$WORK/nginx.conf" -e "$WORK/nginx.err" 2>/dev/null \
  || { nginx -t -c "$WORK/nginx.conf" -e "$WORK/nginx.err"; exit 1; }
nginx -c "$WORK/nginx.conf" -e "$WORK/nginx.err" > "$WORK/nginx.log" 2>&1 &
NPID=$!
PEER_PIDS="$NPID"
haproxy -db -f "$WORK/haproxy.cfg" > "$WORK/haproxy.log" 2>&1 &
XPID=$!
PEER_PIDS="$NPID $XPID"
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$NGINX_PORT") 2>/dev/null \
    && (exec 3<>"/dev/tcp/127.0.0.1/$HAPROXY_PORT") 2>/dev/null && break
  kill -0 "$NPID" 2>/dev/null || { cat "$WORK/nginx.log" "$WORK/nginx.err" >&2; exit 1; }
  kill -0 "$XPID" 2>/dev/null || { cat "$WORK/haproxy.log" >&2; exit 1; }
  sleep 0.1
done
export NGINX_PID="$NPID" HAPROXY_PID="$XPID"

if [ -n "${HOLD:-}" ]; then
  # Investigation: everything up for HOLD seconds (the environment is in $WORK/env.sh), no
  # measurement; then the usual cleanup.
  export -p | grep -E " (HANGAR_|PROXY_|NGINX_|HAPROXY_|HTTPD|OHA|IDS_FILE)" > "$WORK/env.sh"
  echo "HOLD: up for $HOLD s; source $WORK/env.sh; setup in $OUT/setup.json" >&2
  sleep "$HOLD"
  exit 0
fi

if [ -n "${AB:-}" ]; then
  # Builds compared in paired rounds against nginx (python3 bench/proxy.py ab); the first
  # binary is the one left running for the cleanup.
  step "A/B: $AB"
  # shellcheck disable=SC2086  # a list of paths
  python3 bench/proxy.py ab "$OUT/setup.json" "$WORK" $AB | tee "$OUT/ab.txt"
  mkdir -p "$RESULTS" && cp "$OUT/ab.txt" "$RESULTS/"
  exit 0
fi

step "measuring"
if ! python3 bench/proxy.py run "$OUT/setup.json" "$OUT"; then
  echo "--- hangard log (tail)" >&2
  tail -n 30 "$WORK/hangard.log" >&2
  exit 1
fi
if grep -q "hangar-proxy:" "$WORK/hangard.log"; then
  echo "--- the proxy reported (tail):" >&2
  grep "hangar-proxy:" "$WORK/hangard.log" | tail -n 10 >&2
fi

python3 - "$OUT/info.json" "$LOAD_BEFORE" "$OHA" "$HANGARD" <<PY
import json, sys, subprocess, os
def out(*a):
    return subprocess.run(list(a), capture_output=True, text=True).stdout.strip()
json.dump({
  "date": out("date", "-u", "+%Y-%m-%d %H:%M UTC"),
  "rev": out("git", "describe", "--always", "--dirty"),
  "nproc": os.cpu_count(), "kernel": os.uname().release,
  "load_before": sys.argv[2], "load_after": " ".join(open("/proc/loadavg").read().split()[:3]),
  "tools": "; ".join([out(sys.argv[3], "--version"), out("wrk", "-v").splitlines()[0].split(" Copyright")[0],
                      "nginx " + out("dpkg-query", "-W", "-f", "\${Version}", "nginx-light"),
                      "haproxy " + out("dpkg-query", "-W", "-f", "\${Version}", "haproxy"),
                      out("openssl", "version")]),
  "duration": int(os.environ["DURATION"]), "rounds": int(os.environ["ROUNDS"]),
  "runs": int(os.environ["RUNS"]), "connections": int(os.environ["CONNECTIONS"]),
  "wrk_threads": int(os.environ["WRK_THREADS"]),
  "hangard": "%s (built %s)" % (sys.argv[4], out("date", "-u", "-r", sys.argv[4], "+%Y-%m-%d %H:%M UTC")),
}, open(sys.argv[1], "w"))
PY
python3 bench/proxy.py report "$OUT" | tee "$OUT/report.md"
# The report and the raw samples outlive the temp dir.
mkdir -p "$RESULTS"
cp "$OUT"/* "$RESULTS/"
cp "$WORK/hangard.log" "$RESULTS/" 2>/dev/null || true
echo "(report and raw samples in $RESULTS)" >&2
