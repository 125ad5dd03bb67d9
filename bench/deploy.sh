#!/usr/bin/env bash
# Issue 6's deploy benchmark (see BENCHMARKS.md, "Deploys"): wall time of a first deploy and of
# a rolling deploy of 3 machines (image already present) through `hangar deploy`, next to the
# same steps done by direct Machines API calls, side by side in one run against one release
# hangard.
#
#   sudo bench/deploy.sh                 # REPS=7 repetitions (plus one warm-up)
#   REPS=3 SKIP_BUILD=1 bench/deploy.sh  # quick, with what is built
#
# Environment: REPS (7), SKIP_BUILD=1 (use the release binaries and hangar-init already built),
# RESULTS (where the report and raw samples are copied, /tmp/hangar-bench-results).
# Needs root, cgroups, overlayfs. Everything it makes (temp dir, hangard, apps, machines, netns,
# veths, bridge, cgroups, mounts) is removed on exit, also on failure, and the exit checks that
# nothing is left. No timing is asserted: the script reports, it does not judge.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# shellcheck source=../scripts/lib.sh
source scripts/lib.sh
[ "$(id -u)" -eq 0 ] || { echo "bench/deploy.sh: run as root" >&2; exit 2; }

export REPS="${REPS:-7}"
apt_install busybox-static libseccomp-dev pkg-config iproute2
ensure_rust
INIT="$ROOT/target/init/x86_64-unknown-linux-gnu/release/hangar-init"
HANGARD="$CARGO_TARGET_DIR/release/hangard"
HANGAR="$CARGO_TARGET_DIR/release/hangar"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  step "building release hangard and hangar"
  cargo build --release -p hangar-daemon -p hangar-cli
  step "building the static hangar-init"
  RUSTFLAGS="-C target-feature=+crt-static" LIBSECCOMP_LINK_TYPE=static \
    LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
    cargo build --release -p hangar-runtime --bin hangar-init \
    --target x86_64-unknown-linux-gnu --target-dir target/init
fi
for b in "$HANGARD" "$HANGAR" "$INIT"; do
  [ -x "$b" ] || { echo "missing $b (run without SKIP_BUILD=1)" >&2; exit 2; }
done

WORK="$(mktemp -d /tmp/hangar-bench-deploy.XXXXXX)"
DATA="$WORK/data"
PARENT="hangar-bench-deploy-$$"
HOST_ID=$(( (RANDOM << 15 | RANDOM) + 1000 ))
IDS="$WORK/ids"
mkdir -p "$DATA"
: > "$IDS"
HPID=""
PORT=""

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
  # Whatever survived the API (a failed run): processes in our cgroups.
  for d in $(cg_dirs); do
    find "$d" -depth -type d | while read -r c; do
      [ -f "$c/freezer.state" ] && echo THAWED > "$c/freezer.state" 2>/dev/null
      [ -f "$c/cgroup.freeze" ] && echo 0 > "$c/cgroup.freeze" 2>/dev/null
      xargs -r kill -KILL < "$c/cgroup.procs" 2>/dev/null
    done
  done
  sleep 0.2
  awk -v w="$WORK" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m"
  done
  local bridges=""
  [ -s "$IDS" ] && bridges="$(python3 bench/machines.py bridges "$IDS" "$HOST_ID")"
  grep -v ' ' "$IDS" 2>/dev/null | sort -u | while read -r id; do
    [ -e "/run/netns/hgr-$id" ] && ip netns del "hgr-$id"
    ip link show "hgv${id:0:11}" >/dev/null 2>&1 && ip link del "hgv${id:0:11}"
  done
  for b in $bridges; do ip link show "$b" >/dev/null 2>&1 && ip link del "$b"; done
  for d in $(cg_dirs); do find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  nft list table inet "hgrbd$$" >/dev/null 2>&1 && nft delete table inet "hgrbd$$"
  nft list table bridge "hgrbd$$" >/dev/null 2>&1 && nft delete table bridge "hgrbd$$"
  # Checks: nothing of this run is left.
  local ns mounts cgs links tables
  ns="$(grep -v ' ' "$IDS" 2>/dev/null | sort -u | while read -r id; do [ -e "/run/netns/hgr-$id" ] && echo "hgr-$id"; done)"
  mounts="$(awk -v w="$WORK" 'index($2, w) == 1' /proc/mounts)"
  cgs="$(cg_dirs)"
  links="$(for b in $bridges; do ip link show "$b" >/dev/null 2>&1 && echo "$b"; done)"
  tables="$(nft list tables 2>/dev/null | grep "hgrbd$$" || true)"
  for what in ns mounts cgs links tables; do
    if [ -n "${!what}" ]; then
      echo "cleanup: leftover $what:" >&2
      echo "${!what}" >&2
      left=1
    fi
  done
  if [ "$left" = 0 ]; then
    rm -rf "$WORK"
    echo "cleanup: no leftover netns, veths, bridge, nftables tables, cgroups under $PARENT or mounts" >&2
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

step "starting hangard"
PORT="$(free_port)"
MPORT="$(free_port)"
# No edge proxy or DNS (nothing here routes traffic; their ports stay free), no IPv4 egress
# pool, nftables tables of this run's own.
"$HANGARD" --data-dir "$DATA" --api-listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$MPORT" \
  --host-id "$HOST_ID" --cgroup-parent "$PARENT/hangard" --init-binary "$INIT" \
  --no-proxy --dns-listen none --ipv4-pool none --nft-table "hgrbd$$" --no-wireguard \
  > "$WORK/hangard.log" 2>&1 &
HPID=$!
for _ in $(seq 300); do
  [ -s "$DATA/admin.token" ] && grep -q listening "$WORK/hangard.log" && break
  kill -0 "$HPID" 2>/dev/null || { cat "$WORK/hangard.log" >&2; exit 1; }
  sleep 0.1
done
HANGAR_TOKEN="$(cat "$DATA/admin.token")"
export HANGAR_PORT="$PORT" HANGAR_TOKEN HANGAR_BIN="$HANGAR" WORK IDS_FILE="$IDS"

step "deploys: hangar deploy next to direct API calls ($REPS repetitions + 1 warm-up)"
if ! python3 bench/deploy.py run "$WORK/deploy.json"; then
  echo "--- hangard log (tail)" >&2
  tail -n 30 "$WORK/hangard.log" >&2
  exit 1
fi

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), rev $(git describe --always --dirty), $(nproc) CPUs," \
    "kernel $(uname -r), load before $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  python3 bench/deploy.py report "$WORK/deploy.json"
} | tee "$WORK/report.md"
RESULTS="${RESULTS:-/tmp/hangar-bench-results}"
mkdir -p "$RESULTS"
cp "$WORK/deploy.json" "$RESULTS/deploy.json"
cp "$WORK/report.md" "$RESULTS/deploy-report.md"
echo "(report and raw samples in $RESULTS)" >&2
