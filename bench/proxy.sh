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
# a look by hand, measure nothing), RESULTS (where the report and the raw samples are copied,
# /tmp/hangar-bench-proxy-results). Needs root, cgroups, overlayfs; installs nginx-light,
# haproxy, wrk (Debian) and oha (crates.io, pinned, into target/bench-tools) if missing.
# Everything it makes (temp dir, hangard, nginx, HAProxy, machines, netns, veths, bridge,
# cgroups, mounts, nftables tables) is removed on exit, also on failure, and the exit checks
# that nothing is left.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# shellcheck source=../scripts/lib.sh
source scripts/lib.sh
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
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  step "building release hangard and hangar"
  cargo build --release -p hangar-daemon -p hangar-cli
  step "building the static hangar-init"
  RUSTFLAGS="-C target-feature=+crt-static" LIBSECCOMP_LINK_TYPE=static \
    LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
    cargo build --release -p hangar-runtime --bin hangar-init \
    --target x86_64-unknown-linux-gnu --target-dir target/init
  step "building bench/httpd (the backend, static)"
  (cd bench/httpd && RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_TARGET_DIR="$ROOT/target/bench" cargo build --release --locked \
    --target x86_64-unknown-linux-gnu)
fi
for b in "$HANGARD" "$HANGAR" "$INIT" "$HTTPD" "$OHA"; do
  [ -x "$b" ] || { echo "missing $b (run without SKIP_BUILD=1)" >&2; exit 2; }
done

WORK="$(mktemp -d /tmp/hangar-bench-proxy.XXXXXX)"
OUT="$WORK/out"
DATA="$WORK/data"
PARENT="hangar-pbench-$$"
NFT="hgpb_$$"
HOST_ID=$(( (RANDOM << 15 | RANDOM) + 1000 ))
IDS="$WORK/ids"
mkdir -p "$OUT" "$DATA"
: > "$IDS"
HPID="" NPID="" XPID="" PORT=""
export IDS_FILE="$IDS" HANGAR_DATA="$DATA" HTTPD
export IMAGE_TAR="$WORK/image.tar"

cg_dirs() { for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do [ -d "$h$PARENT" ] && echo "$h$PARENT"; done | sort -u; }
nft_tables() { nft list tables 2>/dev/null | awk -v t="$NFT" '$3 == t { print $2 " " $3 }'; }
stop_pid() { # stop_pid PID: TERM, then KILL after 10 s
  local p="$1"
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null || return 0
  kill -TERM "$p"
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  return 0
}

cleanup() {
  local rc=${1:-$?} left=0
  set +e
  trap - EXIT INT TERM
  step "cleaning up"
  if [ "$rc" != 0 ] && [ -d "$WORK" ]; then
    # A failed run keeps its evidence: hangard's log, the containers' init logs, what was measured.
    local keep="${RESULTS:-/tmp/hangar-bench-proxy-results}/failed-$$"
    mkdir -p "$keep"
    cp "$WORK/hangard.log" "$WORK"/*.err "$WORK"/*.log "$keep/" 2>/dev/null
    cp -r "$OUT" "$keep/out" 2>/dev/null
    (cd "$DATA" 2>/dev/null && find runtime -name '*.log' -size -1M -exec cp --parents {} "$keep/" \; 2>/dev/null)
    echo "cleanup: logs of the failed run in $keep" >&2
  fi
  stop_pid "$NPID"
  stop_pid "$XPID"
  if [ -n "$HPID" ] && kill -0 "$HPID" 2>/dev/null; then
    if [ -s "$DATA/admin.token" ]; then
      HANGAR_PORT="$PORT" HANGAR_TOKEN="$(cat "$DATA/admin.token")" \
        timeout 300 python3 bench/machines.py sweep "$IDS"
    fi
    stop_pid "$HPID"
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
  grep -v ' ' "$IDS" 2>/dev/null | while read -r id; do
    [ -e "/run/netns/hgr-$id" ] && ip netns del "hgr-$id"
    ip link show "hgv${id:0:11}" >/dev/null 2>&1 && ip link del "hgv${id:0:11}"
  done
  for b in $bridges; do ip link show "$b" >/dev/null 2>&1 && ip link del "$b"; done
  for d in $(cg_dirs); do find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  nft_tables | while read -r fam t; do nft delete table "$fam" "$t"; done
  # Checks: nothing of this run is left.
  local ns mounts cgs links tables procs
  ns="$(grep -v ' ' "$IDS" 2>/dev/null | while read -r id; do [ -e "/run/netns/hgr-$id" ] && echo "hgr-$id"; done)"
  mounts="$(awk -v w="$WORK" 'index($2, w) == 1' /proc/mounts)"
  cgs="$(cg_dirs)"
  links="$(for b in $bridges; do ip link show "$b" >/dev/null 2>&1 && echo "$b"; done)"
  tables="$(nft_tables)"
  procs="$(for p in $HPID $NPID $XPID; do kill -0 "$p" 2>/dev/null && echo "$p"; done)"
  for what in ns mounts cgs links tables procs; do
    if [ -n "${!what}" ]; then
      echo "cleanup: leftover $what:" >&2
      echo "${!what}" >&2
      left=1
    fi
  done
  if [ "$left" = 0 ]; then
    rm -rf "$WORK"
    echo "cleanup: no leftover process, netns, veths, bridge, cgroups under $PARENT, mounts or nftables table $NFT" >&2
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

step "the image: bench/httpd packed with hangar image pack"
python3 bench/proxy.py rootfs "$WORK/rootfs" "$HTTPD"
"$HANGAR" image pack "$WORK/rootfs" -o "$IMAGE_TAR" --tag bench --cmd /httpd \
  -e PORT=8080 --expose 8080/tcp >/dev/null

step "starting hangard"
# The DNS role (when this hangard has it) is not measured here: off, so that it binds nothing.
NO_DNS=()
"$HANGARD" --help | grep -q -- "--no-dns" && NO_DNS=(--no-dns)
PORT="$(free_port)"
MPORT="$(free_port)"
export PROXY_PORT="$(free_port)" PROXY_TLS_PORT="$(free_port)"
"$HANGARD" --data-dir "$DATA" --api-listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$MPORT" \
  --host-id "$HOST_ID" --cgroup-parent "$PARENT/hangard" --init-binary "$INIT" \
  --ipv4-pool none --nft-table "$NFT" --no-wireguard "${NO_DNS[@]}" --proxy-bind 127.0.0.1 \
  --proxy-port "80=$PROXY_PORT,443=$PROXY_TLS_PORT" --autostop-interval 1h \
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
haproxy -db -f "$WORK/haproxy.cfg" > "$WORK/haproxy.log" 2>&1 &
XPID=$!
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
RESULTS="${RESULTS:-/tmp/hangar-bench-proxy-results}"
mkdir -p "$RESULTS"
cp "$OUT"/* "$RESULTS/"
cp "$WORK/hangard.log" "$RESULTS/" 2>/dev/null || true
echo "(report and raw samples in $RESULTS)" >&2
