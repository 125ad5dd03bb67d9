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
# RESULTS (where the report and raw samples are copied, /tmp/hangar-bench-deploy-results).
# Needs root, cgroups, overlayfs. Everything it makes (temp dir, hangard, apps, machines, netns,
# veths, bridge, cgroups, mounts) is removed on exit, also on failure, and the exit checks that
# nothing is left. No timing is asserted: the script reports, it does not judge.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# shellcheck source=../scripts/lib.sh
source scripts/lib.sh
# shellcheck source=lib.sh
source bench/lib.sh
[ "$(id -u)" -eq 0 ] || { echo "bench/deploy.sh: run as root" >&2; exit 2; }

export REPS="${REPS:-7}"
apt_install busybox-static libseccomp-dev pkg-config iproute2
ensure_rust
INIT="$ROOT/target/init/x86_64-unknown-linux-gnu/release/hangar-init"
HANGARD="$CARGO_TARGET_DIR/release/hangard"
HANGAR="$CARGO_TARGET_DIR/release/hangar"
build_release hangar-daemon hangar-cli
need_binaries "$HANGARD" "$HANGAR" "$INIT"

bench_setup deploy

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

step "starting hangard"
start_hangard --no-proxy --dns-listen none --ipv4-pool none
HANGAR_TOKEN="$(cat "$DATA/admin.token")"
export HANGAR_BIN="$HANGAR" WORK IDS_FILE="$IDS"

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
mkdir -p "$RESULTS"
cp "$WORK/deploy.json" "$RESULTS/deploy.json"
cp "$WORK/report.md" "$RESULTS/deploy-report.md"
echo "(report and raw samples in $RESULTS)" >&2
