#!/usr/bin/env bash
# The edge proxy's UDP relay (see BENCHMARKS.md, "UDP services"), side by side in one run:
# round trips to bench/rr's UDP echo in a machine, direct (the machine's 6PN address from the
# host), through Hangar's proxy and through nginx's `stream` UDP proxy to the same machine;
# one flow (latency) and many flows (throughput), rounds in turning order; then one datagram
# to the machine stopped, through Hangar (autostart), until its echo.
#
#   sudo bench/udp.sh                              # full run
#   DURATION=2 ROUNDS=1 RUNS=5 bench/udp.sh        # quick
#
# Environment: DURATION (seconds per run, 5), ROUNDS (6), FLOWS (16), RUNS (wakes, 20),
# SKIP_BUILD=1, HOLD=SECONDS (set up, keep it up that long, measure nothing), RESULTS
# (/tmp/hangar-bench-udp-results). Needs root; installs nginx-light and its stream module
# (Debian) if missing. Everything it makes is removed on exit, also on failure, and the exit
# checks that nothing is left.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# shellcheck source=../scripts/lib.sh
source scripts/lib.sh
# shellcheck source=lib.sh
source bench/lib.sh
[ "$(id -u)" -eq 0 ] || { echo "bench/udp.sh: run as root" >&2; exit 2; }

export DURATION="${DURATION:-5}" ROUNDS="${ROUNDS:-6}" FLOWS="${FLOWS:-16}" RUNS="${RUNS:-20}"

apt_install nginx-light libnginx-mod-stream iperf3 busybox-static libseccomp-dev pkg-config \
  iproute2 nftables
ensure_rust
INIT="${INIT:-$ROOT/target/init/x86_64-unknown-linux-gnu/release/hangar-init}"
HANGARD="${HANGARD:-$CARGO_TARGET_DIR/release/hangard}"
HANGAR="${HANGAR:-$CARGO_TARGET_DIR/release/hangar}"
export RR="${RR:-$ROOT/target/bench/x86_64-unknown-linux-gnu/release/hangar-bench-rr}"
build_release hangar-daemon hangar-cli
build_static_tool rr "round trips"
need_binaries "$HANGARD" "$HANGAR" "$INIT" "$RR"

bench_setup udp
export IDS_FILE="$IDS" HANGAR_DATA="$DATA" WORK
export IMAGE_TAR="$WORK/image.tar"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

step "the image: busybox and bench/rr packed with hangar image pack"
python3 bench/network.py rootfs "$WORK/rootfs" "$RR"
"$HANGAR" image pack "$WORK/rootfs" -o "$IMAGE_TAR" --tag bench --cmd /bin/sh -e PATH=/usr/bin:/bin >/dev/null

step "starting hangard (its proxy on 127.0.0.1)"
export HANGAR_UDP_PORT="$(free_udp_port)"
start_hangard --ipv4-pool none --no-dns --proxy-bind 127.0.0.1 \
  --proxy-port "5353=$HANGAR_UDP_PORT" --autostop-interval 1h

step "the app and its machine"
if ! python3 bench/udp.py setup "$OUT/setup.json"; then
  tail -n 30 "$WORK/hangard.log" >&2
  exit 1
fi

step "starting nginx (stream, UDP, to the same machine)"
export NGINX_UDP_PORT="$(free_udp_port)"
python3 bench/udp.py nginx "$OUT/setup.json" "$WORK" "$NGINX_UDP_PORT"
nginx -t -c "$WORK/nginx.conf" -e "$WORK/nginx.err" 2>/dev/null \
  || { nginx -t -c "$WORK/nginx.conf" -e "$WORK/nginx.err"; exit 1; }
nginx -c "$WORK/nginx.conf" -e "$WORK/nginx.err" > "$WORK/nginx.log" 2>&1 &
PEER_PIDS="$!"
sleep 0.5
kill -0 "$PEER_PIDS" 2>/dev/null || { cat "$WORK/nginx.log" "$WORK/nginx.err" >&2; exit 1; }

if [ -n "${HOLD:-}" ]; then
  export -p | grep -E " (HANGAR_|NGINX_|WORK|RR)" > "$WORK/env.sh"
  echo "HOLD: up for $HOLD s; source $WORK/env.sh; setup in $OUT/setup.json" >&2
  sleep "$HOLD"
  exit 0
fi

step "measuring"
if ! python3 bench/udp.py measure "$OUT/setup.json" "$OUT/measure.json"; then
  tail -n 30 "$WORK/hangard.log" >&2
  exit 1
fi

write_info "$OUT/info.json" "$LOAD_BEFORE" nginx-light libnginx-mod-stream
python3 bench/udp.py report "$OUT" | tee "$OUT/report.md"
mkdir -p "$RESULTS"
cp "$OUT"/* "$RESULTS/"
cp "$WORK/hangard.log" "$RESULTS/" 2>/dev/null || true
echo "(report and raw samples in $RESULTS)" >&2
