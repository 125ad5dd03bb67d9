# What every bench/*.sh shares (source after scripts/lib.sh): one temp dir, data dir, cgroup
# parent, nftables table and host id per run; starting hangard on them; and the cleanup that
# removes everything the run made — through the API first, then by hand — also on failure
# (keeping the logs of a failed run in RESULTS/failed-PID), and then checks that no process,
# netns, veth, bridge, cgroup, mount or nftables table of the run is left.
#
#   bench_setup NAME       WORK, OUT, DATA, PARENT, NFT, HOST_ID, IDS, RESULTS (default
#                          /tmp/hangar-bench-NAME-results), HPID, PORT, PEER_PIDS; the traps
#   start_hangard ARG...   $HANGARD on them (plus ARGs), waited for until it listens; sets
#                          HPID, PORT, MPORT and exports HANGAR_PORT, HANGAR_PID, HANGAR_TOKEN
#   PEER_PIDS              other processes the run started (nginx…), stopped by the cleanup
#   free_port              a free TCP port on 127.0.0.1
#   free_udp_port          a free UDP port on 127.0.0.1
#   build_release PKG...   unless SKIP_BUILD=1: the release build of PKG... and the static
#                          hangar-init every machine runs (target/init)
#   build_static_tool DIR WHAT   unless SKIP_BUILD=1: bench/DIR (its own workspace), static,
#                          in target/bench
#   need_binaries PATH...  exits 2 naming the first that is missing
#   write_info FILE LOAD_BEFORE PKG...   the run's facts as JSON: date, git revision, cores,
#                          kernel, load average before and now, the Debian versions of PKG...

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_udp_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

build_release() { # build_release PKG...
  [ "${SKIP_BUILD:-0}" = 1 ] && return 0
  local args=() p
  for p in "$@"; do args+=(-p "$p"); done
  step "building release $*"
  cargo build --release "${args[@]}"
  step "building the static hangar-init"
  RUSTFLAGS="-C target-feature=+crt-static" LIBSECCOMP_LINK_TYPE=static \
    LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
    cargo build --release -p hangar-runtime --bin hangar-init \
    --target x86_64-unknown-linux-gnu --target-dir target/init
}

build_static_tool() { # build_static_tool DIR WHAT
  [ "${SKIP_BUILD:-0}" = 1 ] && return 0
  local root
  root="$(pwd)"
  step "building bench/$1 ($2, static)"
  (cd "bench/$1" && RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_TARGET_DIR="$root/target/bench" cargo build --release --locked \
    --target x86_64-unknown-linux-gnu)
}

need_binaries() { # need_binaries PATH...
  local b
  for b in "$@"; do
    [ -x "$b" ] || { echo "missing $b (run without SKIP_BUILD=1)" >&2; exit 2; }
  done
}

write_info() { # write_info FILE LOAD_BEFORE PKG...
  python3 - "$@" <<'PY'
import json, sys, subprocess, os
def out(*a):
    return subprocess.run(list(a), capture_output=True, text=True).stdout.strip()
def ver(p):
    return p + " " + out("dpkg-query", "-W", "-f", "${Version}", p)
json.dump({
  "date": out("date", "-u", "+%Y-%m-%d %H:%M UTC"),
  "rev": out("git", "describe", "--always", "--dirty"),
  "nproc": os.cpu_count(), "kernel": os.uname().release,
  "load_before": sys.argv[2], "load_after": " ".join(open("/proc/loadavg").read().split()[:3]),
  "tools": "; ".join(ver(p) for p in sys.argv[3:]),
}, open(sys.argv[1], "w"))
PY
}

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

bench_setup() { # bench_setup NAME
  WORK="$(mktemp -d "/tmp/hangar-bench-$1.XXXXXX")"
  OUT="$WORK/out"
  DATA="$WORK/data"
  PARENT="hangar-bench-$1-$$"
  NFT="hgb_$1_$$"
  HOST_ID=$(( (RANDOM << 15 | RANDOM) + 1000 ))
  IDS="$WORK/ids"
  RESULTS="${RESULTS:-/tmp/hangar-bench-$1-results}"
  mkdir -p "$OUT" "$DATA"
  : > "$IDS"
  HPID="" PORT="" MPORT="" PEER_PIDS=""
  trap bench_cleanup EXIT
  trap 'bench_cleanup 130' INT
  trap 'bench_cleanup 143' TERM
}

start_hangard() { # start_hangard ARG...
  PORT="$(free_port)"
  MPORT="$(free_port)"
  "$HANGARD" --data-dir "$DATA" --api-listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$MPORT" \
    --host-id "$HOST_ID" --cgroup-parent "$PARENT/hangard" --init-binary "$INIT" \
    --nft-table "$NFT" --no-wireguard "$@" > "$WORK/hangard.log" 2>&1 &
  HPID=$!
  for _ in $(seq 300); do
    [ -s "$DATA/admin.token" ] && grep -q listening "$WORK/hangard.log" && break
    kill -0 "$HPID" 2>/dev/null || { cat "$WORK/hangard.log" >&2; exit 1; }
    sleep 0.1
  done
  HANGAR_TOKEN="$(cat "$DATA/admin.token")"
  export HANGAR_PORT="$PORT" HANGAR_PID="$HPID" HANGAR_TOKEN
}

bench_cleanup() {
  local rc=${1:-$?} left=0
  set +e
  trap - EXIT INT TERM
  step "cleaning up"
  # A run that restarted hangard (proxy.sh's AB mode) names the one running now.
  [ -s "$WORK/hangard.pid" ] && HPID="$(cat "$WORK/hangard.pid")"
  if [ "$rc" != 0 ] && [ -d "$WORK" ]; then
    # A failed run keeps its evidence: hangard's log, the containers' init logs, what was measured.
    local keep="$RESULTS/failed-$$"
    mkdir -p "$keep"
    cp "$WORK/hangard.log" "$WORK"/*.err "$WORK"/*.log "$keep/" 2>/dev/null
    cp -r "$OUT" "$keep/out" 2>/dev/null
    (cd "$DATA" 2>/dev/null && find runtime -name '*.log' -size -1M -exec cp --parents {} "$keep/" \; 2>/dev/null)
    echo "cleanup: logs of the failed run in $keep" >&2
  fi
  for p in $PEER_PIDS; do stop_pid "$p"; done
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
  grep -v ' ' "$IDS" 2>/dev/null | sort -u | while read -r id; do
    [ -e "/run/netns/hgr-$id" ] && ip netns del "hgr-$id"
    ip link show "hgv${id:0:11}" >/dev/null 2>&1 && ip link del "hgv${id:0:11}"
  done
  for b in $bridges; do ip link show "$b" >/dev/null 2>&1 && ip link del "$b"; done
  for d in $(cg_dirs); do find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  nft_tables | while read -r fam t; do nft delete table "$fam" "$t"; done
  # Checks: nothing of this run is left.
  local ns mounts cgs links tables procs
  ns="$(grep -v ' ' "$IDS" 2>/dev/null | sort -u | while read -r id; do [ -e "/run/netns/hgr-$id" ] && echo "hgr-$id"; done)"
  mounts="$(awk -v w="$WORK" 'index($2, w) == 1' /proc/mounts)"
  cgs="$(cg_dirs)"
  links="$(for b in $bridges; do ip link show "$b" >/dev/null 2>&1 && echo "$b"; done)"
  tables="$(nft_tables)"
  procs="$(for p in $HPID $PEER_PIDS; do kill -0 "$p" 2>/dev/null && echo "$p"; done)"
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
