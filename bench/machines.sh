#!/usr/bin/env bash
# Issue 3's machine benchmarks, side by side in one run (see BENCHMARKS.md, "Machines through
# the API"): Hangar's Machines API driving a release `hangard`, next to Hangar's LinuxDriver,
# bare youki libcontainer and runc on the same busybox bundle.
#
#   sudo bench/machines.sh                       # full run (RUNS=100 CONCURRENT=200 …)
#   RUNS=10 CONCURRENT=20 DURATION=3 bench/machines.sh   # quick
#
# Environment: RUNS (latency samples per row, 100), CONCURRENT (machines created at once, 200),
# CLIENT_THREADS (HTTP client threads, 32), RATE (req/s of the open-loop API load, 1000),
# DURATION (seconds per load step, 10), ROUNDS (the runtime peers run in this many interleaved
# rounds, half before and half after the API part, 4), SETTLE (seconds between `started` and
# the next stop in the start-from-stopped rows, 0.05), SKIP_BUILD=1 (use what is built),
# RESULTS (where the report and the raw samples are copied, /tmp/hangar-bench-machines-results).
# Needs root, cgroups, overlayfs; installs runc and busybox-static if missing. Everything it
# makes (temp dir, hangard, machines, netns, veths, bridge, cgroups, mounts) is removed on exit,
# also on failure, and the exit checks that nothing is left.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# shellcheck source=../scripts/lib.sh
source scripts/lib.sh
# shellcheck source=lib.sh
source bench/lib.sh
[ "$(id -u)" -eq 0 ] || { echo "bench/machines.sh: run as root" >&2; exit 2; }

export RUNS="${RUNS:-100}" CONCURRENT="${CONCURRENT:-200}" CLIENT_THREADS="${CLIENT_THREADS:-32}"
export RATE="${RATE:-1000}" DURATION="${DURATION:-10}"

apt_install runc busybox-static libseccomp-dev pkg-config iproute2
ensure_rust
INIT="$ROOT/target/init/x86_64-unknown-linux-gnu/release/hangar-init"
HANGARD="$CARGO_TARGET_DIR/release/hangard"
BENCH_RT="$ROOT/target/bench/release/hangar-bench-runtime"
build_release hangar-daemon
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  step "building bench/runtime (libcontainer and LinuxDriver figures)"
  [ -f bench/runtime/Cargo.lock ] || cp Cargo.lock bench/runtime/Cargo.lock
  (cd bench/runtime && CARGO_TARGET_DIR="$ROOT/target/bench" cargo build --release)
fi
need_binaries "$HANGARD" "$INIT" "$BENCH_RT"

bench_setup machines
export IDS_FILE="$IDS" CGROUP_PARENT="$PARENT/hangard" HANGAR_DATA="$DATA"
export IMAGE_TAR="$WORK/image.tar"

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

step "image and bundle"
python3 bench/machines.py image "$IMAGE_TAR"
python3 bench/machines.py bundle "$WORK/bundle" "$PARENT"

# The runtime peers run in ROUNDS interleaved rounds, half before the API part and half after
# it, so that a busy spell of the (shared) box does not land on one column only.
ROUNDS="${ROUNDS:-4}"
PER_ROUND=$(( (RUNS + ROUNDS - 1) / ROUNDS ))
peers() { # peers FIRST LAST
  for r in $(seq "$1" "$2"); do
    step "runtime peers, round $r of $ROUNDS (x$PER_ROUND each): runc, libcontainer, LinuxDriver"
    python3 bench/machines.py runc "$WORK/bundle" "$WORK/runc-root" "$PER_ROUND" "$OUT/runc.$r.json"
    BARE_RUN_BUNDLE="$WORK/bundle-true" "$BENCH_RT" bare "$WORK/bundle" "$WORK/lc-root" "$PER_ROUND" > "$OUT/bare.$r.json"
    "$BENCH_RT" driver "$WORK/bundle/rootfs" "$WORK/driver-state" "$INIT" "$PARENT/driver" "$PER_ROUND" > "$OUT/driver.$r.json"
  done
}
peers 1 $(( ROUNDS / 2 ))

step "starting hangard"
start_hangard

step "Machines API"
if ! python3 bench/machines.py api "$OUT/api.json"; then
  echo "--- hangard log (tail)" >&2
  tail -n 30 "$WORK/hangard.log" >&2
  exit 1
fi
if grep -q "hangar-agent" "$WORK/hangard.log"; then
  echo "--- hangard reported (tail):" >&2
  grep "hangar-agent" "$WORK/hangard.log" | tail -n 10 >&2
fi

peers $(( ROUNDS / 2 + 1 )) "$ROUNDS"

python3 - "$OUT/info.json" "$LOAD_BEFORE" <<PY
import json, sys, subprocess, os
json.dump({
  "date": subprocess.run(["date", "-u", "+%Y-%m-%d %H:%M UTC"], capture_output=True, text=True).stdout.strip(),
  "rev": subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip(),
  "nproc": os.cpu_count(), "kernel": os.uname().release,
  "load_before": sys.argv[2], "load_after": " ".join(open("/proc/loadavg").read().split()[:3]),
  "runs": int(os.environ["RUNS"]), "rate": int(os.environ["RATE"]),
  "settle": float(os.environ.get("SETTLE", "0.05")), "rounds": int(os.environ.get("ROUNDS", "4")),
  "duration": float(os.environ["DURATION"]), "threads": int(os.environ["CLIENT_THREADS"]),
}, open(sys.argv[1], "w"))
PY
python3 bench/machines.py report "$OUT" | tee "$OUT/report.md"
# The report and the raw samples outlive the temp dir.
mkdir -p "$RESULTS"
cp "$OUT"/* "$RESULTS/"
echo "(report and raw samples in $RESULTS)" >&2
