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
# RESULTS (where the report and the raw samples are copied, /tmp/hangar-bench-results).
# Needs root, cgroups, overlayfs; installs runc and busybox-static if missing. Everything it
# makes (temp dir, hangard, machines, netns, veths, bridge, cgroups, mounts) is removed on exit,
# also on failure, and the exit checks that nothing is left.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# shellcheck source=../scripts/lib.sh
source scripts/lib.sh
[ "$(id -u)" -eq 0 ] || { echo "bench/machines.sh: run as root" >&2; exit 2; }

export RUNS="${RUNS:-100}" CONCURRENT="${CONCURRENT:-200}" CLIENT_THREADS="${CLIENT_THREADS:-32}"
export RATE="${RATE:-1000}" DURATION="${DURATION:-10}"

apt_install runc busybox-static libseccomp-dev pkg-config iproute2
ensure_rust
INIT="$ROOT/target/init/x86_64-unknown-linux-gnu/release/hangar-init"
HANGARD="$CARGO_TARGET_DIR/release/hangard"
BENCH_RT="$ROOT/target/bench/release/hangar-bench-runtime"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  step "building release hangard"
  cargo build --release -p hangar-daemon
  step "building the static hangar-init"
  RUSTFLAGS="-C target-feature=+crt-static" LIBSECCOMP_LINK_TYPE=static \
    LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
    cargo build --release -p hangar-runtime --bin hangar-init \
    --target x86_64-unknown-linux-gnu --target-dir target/init
  step "building bench/runtime (libcontainer and LinuxDriver figures)"
  [ -f bench/runtime/Cargo.lock ] || cp Cargo.lock bench/runtime/Cargo.lock
  (cd bench/runtime && CARGO_TARGET_DIR="$ROOT/target/bench" cargo build --release)
fi
for b in "$HANGARD" "$INIT" "$BENCH_RT"; do
  [ -x "$b" ] || { echo "missing $b (run without SKIP_BUILD=1)" >&2; exit 2; }
done

WORK="$(mktemp -d /tmp/hangar-bench.XXXXXX)"
OUT="$WORK/out"
DATA="$WORK/data"
PARENT="hangar-bench-$$"
HOST_ID=$(( (RANDOM << 15 | RANDOM) + 1000 ))
IDS="$WORK/ids"
mkdir -p "$OUT" "$DATA"
: > "$IDS"
HPID=""
PORT=""
export IDS_FILE="$IDS" CGROUP_PARENT="$PARENT/hangard" HANGAR_DATA="$DATA"
export IMAGE_TAR="$WORK/image.tar"

cg_dirs() { for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do [ -d "$h$PARENT" ] && echo "$h$PARENT"; done | sort -u; }

cleanup() {
  local rc=${1:-$?} left=0
  set +e
  trap - EXIT INT TERM
  step "cleaning up"
  if [ -n "$HPID" ] && kill -0 "$HPID" 2>/dev/null; then
    if [ -s "$DATA/admin.token" ]; then
      HANGAR_PORT="$PORT" HANGAR_TOKEN="$(cat "$DATA/admin.token")" \
        timeout 300 python3 bench/machines.py sweep "$IDS"
    fi
    kill -TERM "$HPID"
    for _ in $(seq 100); do kill -0 "$HPID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$HPID" 2>/dev/null
    wait "$HPID" 2>/dev/null
  fi
  # Whatever survived the API (a failed run): processes in our cgroups, runc's containers.
  for d in $(cg_dirs); do
    find "$d" -depth -type d | while read -r c; do
      [ -f "$c/freezer.state" ] && echo THAWED > "$c/freezer.state" 2>/dev/null
      [ -f "$c/cgroup.freeze" ] && echo 0 > "$c/cgroup.freeze" 2>/dev/null
      xargs -r kill -KILL < "$c/cgroup.procs" 2>/dev/null
    done
  done
  if [ -d "$WORK/runc-root" ]; then
    for c in $(runc --root "$WORK/runc-root" list -q 2>/dev/null); do
      runc --root "$WORK/runc-root" delete -f "$c" >/dev/null 2>&1
    done
  fi
  sleep 0.2
  awk -v w="$WORK" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m"
  done
  local bridges=""
  [ -s "$IDS" ] && bridges="$(python3 bench/machines.py bridges "$IDS" "$HOST_ID")"
  grep -v ' ' "$IDS" 2>/dev/null | while read -r id; do
    [ -e "/run/netns/hgr-$id" ] && ip netns del "hgr-$id"
    ip link show "hgv${id:0:11}" >/dev/null 2>&1 && ip link del "hgv${id:0:11}"
  done
  for b in $bridges; do ip link show "$b" >/dev/null 2>&1 && ip link del "$b"; done
  for d in $(cg_dirs); do find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  # Checks: nothing of this run is left.
  local ns mounts cgs links
  ns="$(grep -v ' ' "$IDS" 2>/dev/null | while read -r id; do [ -e "/run/netns/hgr-$id" ] && echo "hgr-$id"; done)"
  mounts="$(awk -v w="$WORK" 'index($2, w) == 1' /proc/mounts)"
  cgs="$(cg_dirs)"
  links="$(for b in $bridges; do ip link show "$b" >/dev/null 2>&1 && echo "$b"; done)"
  for what in ns mounts cgs links; do
    if [ -n "${!what}" ]; then
      echo "cleanup: leftover $what:" >&2
      echo "${!what}" >&2
      left=1
    fi
  done
  if [ "$left" = 0 ]; then
    rm -rf "$WORK"
    echo "cleanup: no leftover netns, veths, bridge, cgroups under $PARENT or mounts" >&2
  else
    echo "cleanup: kept $WORK for inspection" >&2
    [ "$rc" = 0 ] && rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'cleanup 130' INT
trap 'cleanup 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
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
PORT="$(free_port)"
MPORT="$(free_port)"
"$HANGARD" --data-dir "$DATA" --api-listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$MPORT" \
  --host-id "$HOST_ID" --cgroup-parent "$PARENT/hangard" --init-binary "$INIT" --no-wireguard \
  > "$WORK/hangard.log" 2>&1 &
HPID=$!
for _ in $(seq 300); do
  [ -s "$DATA/admin.token" ] && grep -q listening "$WORK/hangard.log" && break
  kill -0 "$HPID" 2>/dev/null || { cat "$WORK/hangard.log" >&2; exit 1; }
  sleep 0.1
done
export HANGAR_PORT="$PORT" HANGAR_PID="$HPID"
HANGAR_TOKEN="$(cat "$DATA/admin.token")"
export HANGAR_TOKEN

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
RESULTS="${RESULTS:-/tmp/hangar-bench-results}"
mkdir -p "$RESULTS"
cp "$OUT"/* "$RESULTS/"
echo "(report and raw samples in $RESULTS)" >&2
