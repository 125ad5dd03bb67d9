#!/usr/bin/env bash
# The `pg_tls` handler (see BENCHMARKS.md, "PostgreSQL through pg_tls"), side by side in one
# run: pgbench against Debian's PostgreSQL in a machine, direct without TLS (the machine's
# 6PN address from the host), direct with PostgreSQL's own TLS (OpenSSL, the server's
# certificate), and through Hangar's proxy (TLS at the edge, plaintext to the server).
# Neither nginx nor HAProxy can terminate PostgreSQL's in-band TLS, so the peer is the
# server's own TLS. Two loads, rounds in turning order: select-only transactions on kept
# connections (the relay's cost), and a new connection per transaction (`pgbench -C`: TLS
# handshake, startup and authentication each time).
#
#   sudo bench/pg.sh                              # full run
#   DURATION=3 ROUNDS=1 bench/pg.sh               # quick
#
# Environment: DURATION (seconds per run, 10), ROUNDS (4), CLIENTS (8), SKIP_BUILD=1,
# HOLD=SECONDS (set up, keep it up that long, measure nothing), RESULTS
# (/tmp/hangar-bench-pg-results). Needs root; installs postgresql (Debian) if missing.
# Everything it makes is removed on exit, also on failure, and the exit checks that
# nothing is left.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# shellcheck source=../scripts/lib.sh
source scripts/lib.sh
# shellcheck source=lib.sh
source bench/lib.sh
[ "$(id -u)" -eq 0 ] || { echo "bench/pg.sh: run as root" >&2; exit 2; }

export DURATION="${DURATION:-10}" ROUNDS="${ROUNDS:-4}" CLIENTS="${CLIENTS:-8}"

apt_install postgresql openssl busybox-static libseccomp-dev pkg-config iproute2 nftables
ensure_rust
INIT="${INIT:-$ROOT/target/init/x86_64-unknown-linux-gnu/release/hangar-init}"
HANGARD="${HANGARD:-$CARGO_TARGET_DIR/release/hangard}"
build_release hangar-daemon
need_binaries "$HANGARD" "$INIT"

bench_setup pg
export IDS_FILE="$IDS" HANGAR_DATA="$DATA" WORK
export IMAGE_TAR="$WORK/image.tar"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
python3 bench/machines.py image "$IMAGE_TAR"

step "starting hangard (its proxy on 127.0.0.1)"
export HANGAR_PG_PORT="$(free_port)"
start_hangard --ipv4-pool none --no-dns --proxy-bind 127.0.0.1 \
  --proxy-port "5432=$HANGAR_PG_PORT" --autostop-interval 1h

step "the app and its machine"
if ! python3 bench/pg.py setup "$OUT/setup.json"; then
  tail -n 30 "$WORK/hangard.log" >&2
  exit 1
fi

step "PostgreSQL in the machine's network namespace (TLS on, for the direct TLS runs)"
python3 bench/pg.py server "$OUT/setup.json" "$WORK"
MACHINE_ID="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$OUT/setup.json")"
ip netns exec "hgr-$MACHINE_ID" setpriv --reuid=postgres --regid=postgres --init-groups \
  "$(cat "$WORK/pg-bin")/postgres" -D "$WORK/pg/data" > "$WORK/postgres.log" 2>&1 &
PEER_PIDS="$!"
python3 bench/pg.py ready "$WORK" "$PEER_PIDS"

if [ -n "${HOLD:-}" ]; then
  export -p | grep -E " (HANGAR_|WORK)" > "$WORK/env.sh"
  echo "HOLD: up for $HOLD s; source $WORK/env.sh; setup in $OUT/setup.json" >&2
  sleep "$HOLD"
  exit 0
fi

step "measuring"
if ! python3 bench/pg.py measure "$OUT/setup.json" "$WORK" "$OUT/measure.json"; then
  tail -n 30 "$WORK/hangard.log" "$WORK/postgres.log" >&2
  exit 1
fi

write_info "$OUT/info.json" "$LOAD_BEFORE" postgresql openssl
python3 bench/pg.py report "$OUT" | tee "$OUT/report.md"
mkdir -p "$RESULTS"
cp "$OUT"/* "$RESULTS/"
cp "$WORK/hangard.log" "$WORK/postgres.log" "$RESULTS/" 2>/dev/null || true
echo "(report and raw samples in $RESULTS)" >&2
