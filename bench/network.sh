#!/usr/bin/env bash
# Issue 5's private-network benchmarks, side by side in one run (see BENCHMARKS.md, "Private
# networks"): Hangar's `.internal` DNS next to unbound serving the same records as a local
# zone (dnsperf), how soon a machine's state change shows in DNS answers, and machine-to-machine
# TCP over the network's bridge next to host loopback (iperf3 and bench/rr round trips), the
# same binaries on both paths.
#
#   sudo bench/network.sh                                   # full run
#   DURATION=3 ROUNDS=1 CHANGES=20 NET_SECONDS=2 bench/network.sh     # quick
#
# Environment: DURATION (seconds per dnsperf run, 10), ROUNDS (3; servers alternate), CHANGES
# (stop/start cycles, 100), DNS_MACHINES (machines of the DNS app, 10), NET_SECONDS (per
# iperf3/rr run, 5), SKIP_BUILD=1, HOLD=SECONDS (set up, keep it up that long for a look by
# hand, measure nothing), RESULTS (/tmp/hangar-bench-network-results).
# Hangar's DNS is asked on its operators' listener (127.0.0.1), which answers every network
# with the same code path machines reach at their `…::3`. Needs root; installs dnsperf,
# unbound, iperf3 (Debian) if missing. Everything it makes is removed on exit, also
# on failure, and the exit checks that nothing is left.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# shellcheck source=../scripts/lib.sh
source scripts/lib.sh
# shellcheck source=lib.sh
source bench/lib.sh
[ "$(id -u)" -eq 0 ] || { echo "bench/network.sh: run as root" >&2; exit 2; }

export DURATION="${DURATION:-10}" ROUNDS="${ROUNDS:-3}" CHANGES="${CHANGES:-100}"
export DNS_MACHINES="${DNS_MACHINES:-10}" NET_SECONDS="${NET_SECONDS:-5}"

apt_install dnsperf unbound iperf3 bind9-dnsutils busybox-static libseccomp-dev pkg-config iproute2 nftables
ensure_rust
INIT="${INIT:-$ROOT/target/init/x86_64-unknown-linux-gnu/release/hangar-init}"
HANGARD="${HANGARD:-$CARGO_TARGET_DIR/release/hangard}"
HANGAR="${HANGAR:-$CARGO_TARGET_DIR/release/hangar}"
export RR="${RR:-$ROOT/target/bench/x86_64-unknown-linux-gnu/release/hangar-bench-rr}"
build_release hangar-daemon hangar-cli
build_static_tool rr "round trips"
need_binaries "$HANGARD" "$HANGAR" "$INIT" "$RR"

bench_setup network
UPID=""
export IDS_FILE="$IDS" HANGAR_DATA="$DATA" WORK
export IMAGE_TAR="$WORK/image.tar"

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

step "the image: busybox, iperf3 and bench/rr packed with hangar image pack"
python3 bench/network.py rootfs "$WORK/rootfs" "$RR"
"$HANGAR" image pack "$WORK/rootfs" -o "$IMAGE_TAR" --tag bench --cmd /bin/sh -e PATH=/usr/bin:/bin >/dev/null

step "starting hangard"
export DNS_PORT="$(free_udp_port)"
start_hangard --ipv4-pool none --no-proxy --dns-listen "127.0.0.1:$DNS_PORT"

step "apps and machines"
if ! python3 bench/network.py setup "$OUT/setup.json"; then
  tail -n 30 "$WORK/hangard.log" >&2
  exit 1
fi

step "starting unbound (the same records as a local zone)"
export UNBOUND_PORT="$(free_udp_port)"
python3 bench/network.py unbound "$OUT/setup.json" "$WORK" "$UNBOUND_PORT"
unbound-checkconf "$WORK/unbound.conf" >/dev/null
unbound -d -c "$WORK/unbound.conf" > "$WORK/unbound.out" 2>&1 &
UPID=$!
PEER_PIDS="$UPID"
for _ in $(seq 100); do
  dig +short +time=1 +tries=1 -p "$UNBOUND_PORT" @127.0.0.1 "x.internal" >/dev/null 2>&1 && break
  kill -0 "$UPID" 2>/dev/null || { cat "$WORK/unbound.out" "$WORK/unbound.log" >&2; exit 1; }
  sleep 0.1
done

if [ -n "${HOLD:-}" ]; then
  # Investigation: everything up for HOLD seconds (the environment in $WORK/env.sh), no
  # measurement; then the usual cleanup.
  export -p | grep -E " (HANGAR_|DNS_PORT|UNBOUND_PORT|WORK|RR)" > "$WORK/env.sh"
  echo "HOLD: up for $HOLD s; source $WORK/env.sh; setup in $OUT/setup.json" >&2
  sleep "$HOLD"
  exit 0
fi

step "measuring"
export LO_IPERF_PORT="$(free_port)" LO_RR_PORT="$(free_port)"
for what in dns change net; do
  if ! python3 bench/network.py "$what" "$OUT/setup.json" "$OUT/$what.json"; then
    echo "--- hangard log (tail)" >&2
    tail -n 30 "$WORK/hangard.log" >&2
    exit 1
  fi
done

write_info "$OUT/info.json" "$LOAD_BEFORE" dnsperf unbound iperf3
python3 bench/network.py report "$OUT" | tee "$OUT/report.md"
mkdir -p "$RESULTS"
cp "$OUT"/* "$RESULTS/"
cp "$WORK/hangard.log" "$RESULTS/" 2>/dev/null || true
echo "(report and raw samples in $RESULTS)" >&2
