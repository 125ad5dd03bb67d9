#!/usr/bin/env bash
# How a proxy's threads share a wrk run: CPU ticks (1/100 s) and involuntary context switches
# of every thread of PIDs that ran during it. Meant for a HOLD setup of bench/proxy.sh:
#   HOLD=900 SKIP_BUILD=1 bench/proxy.sh &        # then, in another shell:
#   source $WORK/env.sh                             # (the path is printed by HOLD)
#   bench/worker-share.sh "$PROXY_PORT" APP.localhost "$HANGAR_PID"
#   bench/worker-share.sh "$NGINX_PORT" APP.localhost $(pgrep -P "$NGINX_PID")
# Env: DURATION (s, default 10), CONNECTIONS (50), WRK_THREADS (2).
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 PORT HOST PID..." >&2; exit 2; }
port=$1 host=$2
shift 2
snap() {
  local p t
  for p in "$@"; do
    for t in /proc/"$p"/task/*; do
      printf '%s %s %s %s\n' "$(basename "$t")" "$(cat "$t/comm")" \
        "$(awk '{print $14 + $15}' "$t/stat")" \
        "$(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$t/status")"
    done
  done | sort
}
before="$(snap "$@")"
wrk -t"${WRK_THREADS:-2}" -c"${CONNECTIONS:-50}" -d"${DURATION:-10}s" -H "Host: $host" \
  "http://127.0.0.1:$port/" | grep -E "Requests/sec"
after="$(snap "$@")"
join <(echo "$before") <(echo "$after") | awk '
  { ticks = $6 - $3; invol = $7 - $4 }
  ticks > 0 { printf "%-8s %-20s %6d ticks %8d involuntary switches\n", $1, $2, ticks, invol }'
