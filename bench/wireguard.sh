#!/usr/bin/env bash
# Issue 5's WireGuard benchmark, side by side in one run (BENCHMARKS.md, "WireGuard peers"):
# TCP throughput (iperf3, both directions) and round trips (ICMPv6 echo, busybox ping6) between
# a machine's namespace and
#   - a WireGuard peer: its own namespace, brought up by wg-quick with hangar-wg, through the
#     gateway (hangar-wg on the host: the same userspace device hangard's gateway runs) and
#     the kernel's forwarding into the network's bridge;
#   - another machine on the same bridge (the plain 6PN path).
#
#   sudo bench/wireguard.sh                      # full run: 3 rounds of 10 s
#   ROUNDS=1 SECONDS_PER=3 bench/wireguard.sh    # quick
#
# Environment: ROUNDS (3; the paths alternate), SECONDS_PER (10, per iperf3 run), PINGS (200),
# SKIP_BUILD=1, RESULTS (/tmp/hangar-bench-wireguard-results). Needs root; installs
# wireguard-tools, iperf3 and busybox-static (Debian) if missing. Everything it makes is
# removed on exit, also on failure, and the exit checks that nothing is left.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# shellcheck source=../scripts/lib.sh
source scripts/lib.sh
[ "$(id -u)" -eq 0 ] || { echo "bench/wireguard.sh: run as root" >&2; exit 2; }

ROUNDS="${ROUNDS:-3}" SECONDS_PER="${SECONDS_PER:-10}" PINGS="${PINGS:-200}"
apt_install iperf3 busybox-static iproute2
# Without what it recommends (a kernel module through dkms): userspace is enough.
dpkg -s wireguard-tools >/dev/null 2>&1 || { apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wireguard-tools; }
ensure_rust
WG_BIN="${WG_BIN:-$CARGO_TARGET_DIR/release/hangar-wg}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  step "building release hangar-wg"
  cargo build --release -p hangar-wireguard --bin hangar-wg
fi
[ -x "$WG_BIN" ] || { echo "missing $WG_BIN (run without SKIP_BUILD=1)" >&2; exit 2; }

WORK="$(mktemp -d /tmp/hangar-bench-wireguard.XXXXXX)"
S=$$
BR="hgrtbb$S" GW="hgrwgb$S" VP="hgrtvp$S"
NS_M="hgrtbm$S" NS_M2="hgrtbn$S" NS_P="hgrtbp$S"
PEER_IF="wgpeer$S"
HEX="$(printf '%x' $((S % 65536)))"
NET="fdaa:7e57:$HEX"
M_IP="$NET:0:1:0:1:2" M2_IP="$NET:0:1:0:2:2" BR_IP="$NET:0:1::1"
PEER_IP="$NET::1:102"
UL_H="fd5e:$HEX::1" UL_P="fd5e:$HEX::2"
FWD_ALL_BEFORE="$(cat /proc/sys/net/ipv6/conf/all/forwarding)"

cleanup() {
  local rc=${1:-$?} left=0
  set +e
  trap - EXIT INT TERM
  step "cleaning up"
  [ -f "$WORK/$PEER_IF.conf" ] && ip netns exec "$NS_P" env WG_QUICK_USERSPACE_IMPLEMENTATION="$WG_BIN" \
    PATH="$WORK/bin:$PATH" wg-quick down "$WORK/$PEER_IF.conf" >/dev/null 2>&1
  rm -f "/var/run/wireguard/$GW.sock"
  for ns in "$NS_M" "$NS_M2" "$NS_P"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null; done
  done
  sleep 0.5
  for ns in "$NS_M" "$NS_M2" "$NS_P"; do [ -e "/run/netns/$ns" ] && ip netns del "$ns"; done
  for l in "$BR" "$VP" "$GW" "hgrtbv1$S" "hgrtbv2$S"; do ip link show "$l" >/dev/null 2>&1 && ip link del "$l"; done
  [ "$FWD_ALL_BEFORE" = 0 ] && echo 0 > /proc/sys/net/ipv6/conf/all/forwarding
  local links ns procs
  links="$(for l in "$BR" "$VP" "$GW"; do ip link show "$l" >/dev/null 2>&1 && echo "$l"; done)"
  ns="$(for n in "$NS_M" "$NS_M2" "$NS_P"; do [ -e "/run/netns/$n" ] && echo "$n"; done)"
  procs="$(pgrep -f "hangar-wg $GW" || true)"
  for what in links ns procs; do
    if [ -n "${!what}" ]; then echo "cleanup: leftover $what: ${!what}" >&2; left=1; fi
  done
  if [ "$left" = 0 ]; then
    rm -rf "$WORK"
    echo "cleanup: no leftover namespace, link or process" >&2
  else
    [ "$rc" = 0 ] && rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'cleanup 130' INT
trap 'cleanup 143' TERM

step "a network: a bridge with two machines' namespaces"
ip link add "$BR" type bridge
ip addr add "$BR_IP/80" dev "$BR" nodad
ip link set "$BR" up
n=1
for pair in "$NS_M:$M_IP" "$NS_M2:$M2_IP"; do
  ns="${pair%%:*}" ip6="${pair#*:}"
  ip netns add "$ns"
  ip link add "hgrtbv$n$S" type veth peer name eth0 netns "$ns"
  ip link set "hgrtbv$n$S" master "$BR" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$ip6/80" dev eth0 nodad
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$BR_IP" dev eth0
  n=$((n + 1))
done

step "the gateway: hangar-wg on the host, forwarding to the bridge"
"$WG_BIN" "$GW"
GW_KEY="$(wg genkey)"
echo "$GW_KEY" > "$WORK/gw.key"
wg set "$GW" private-key "$WORK/gw.key" listen-port 0
GW_PORT="$(wg show "$GW" listen-port)"
ip link set "$GW" mtu 1420 up
if [ -e "/proc/sys/net/ipv6/conf/$GW/force_forwarding" ]; then
  echo 1 > "/proc/sys/net/ipv6/conf/$GW/force_forwarding"
  echo 1 > "/proc/sys/net/ipv6/conf/$BR/force_forwarding"
else
  echo 1 > /proc/sys/net/ipv6/conf/all/forwarding
fi

step "the peer: its namespace, wg-quick up with hangar-wg"
ip netns add "$NS_P"
ip -n "$NS_P" link set lo up
ip link add "$VP" type veth peer name eth0 netns "$NS_P"
ip addr add "$UL_H/64" dev "$VP" nodad
ip link set "$VP" up
ip -n "$NS_P" addr add "$UL_P/64" dev eth0 nodad
ip -n "$NS_P" link set eth0 up
PEER_KEY="$(wg genkey)"
PEER_PUB="$(echo "$PEER_KEY" | wg pubkey)"
mkdir -p "$WORK/bin"
printf '#!/bin/sh\ncat >/dev/null\n' > "$WORK/bin/resolvconf"
chmod +x "$WORK/bin/resolvconf"
cat > "$WORK/$PEER_IF.conf" <<EOF
[Interface]
PrivateKey = $PEER_KEY
Address = $PEER_IP/120

[Peer]
PublicKey = $(echo "$GW_KEY" | wg pubkey)
AllowedIPs = $NET::/48
Endpoint = [$UL_H]:$GW_PORT
PersistentKeepalive = 15
EOF
wg set "$GW" peer "$PEER_PUB" allowed-ips "$NET::1:100/120"
ip -6 route replace "$NET::1:100/120" dev "$GW"
ip netns exec "$NS_P" env WG_QUICK_USERSPACE_IMPLEMENTATION="$WG_BIN" PATH="$WORK/bin:$PATH" \
  wg-quick up "$WORK/$PEER_IF.conf" 2>"$WORK/wg-quick.log"
for _ in $(seq 50); do
  ip netns exec "$NS_P" busybox ping6 -c 1 -W 1 "$M_IP" >/dev/null 2>&1 && break
done
ip netns exec "$NS_P" busybox ping6 -c 1 -W 2 "$M_IP" >/dev/null || { echo "the peer can not reach the machine" >&2; exit 1; }

step "measuring: $ROUNDS rounds, ${SECONDS_PER}s per iperf3 run, $PINGS pings"
ip netns exec "$NS_M" iperf3 -s -D -p 5201 --logfile "$WORK/iperf3-server.log"
sleep 0.5
iperf() { # iperf NS [-R] → Gbit/s
  ip netns exec "$1" iperf3 -J -c "$M_IP" -p 5201 -t "$SECONDS_PER" ${2:-} \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))'
}
rtt() { # rtt NS → "avg_ms"
  ip netns exec "$1" busybox ping6 -q -c "$PINGS" -i 0.01 -s 56 "$M_IP" \
    | awk -F'/' '/min\/avg\/max/ { split($0, a, "= "); split(a[2], b, "/"); print b[2] }'
}
: > "$WORK/samples"
for r in $(seq "$ROUNDS"); do
  for path in wireguard bridge; do
    ns="$NS_P"; [ "$path" = bridge ] && ns="$NS_M2"
    up="$(iperf "$ns")"
    down="$(iperf "$ns" -R)"
    ms="$(rtt "$ns")"
    echo "$r $path $up $down $ms" | tee -a "$WORK/samples"
  done
done

python3 - "$WORK/samples" "$ROUNDS" "$SECONDS_PER" "$PINGS" <<'PY' | tee "$WORK/report.md"
import statistics, sys, os, subprocess
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def med(path, i):
    return statistics.median(float(r[i]) for r in rows if r[1] == path)
def out(*a):
    return subprocess.run(list(a), capture_output=True, text=True).stdout.strip()
print(f"{out('date', '-u', '+%Y-%m-%d %H:%M UTC')}, {os.cpu_count()} cores, kernel {os.uname().release}, "
      f"rev {out('git', 'describe', '--always', '--dirty')}; medians of {sys.argv[2]} rounds, "
      f"{sys.argv[3]} s per iperf3 run, {sys.argv[4]} pings (56 bytes, 10 ms apart)")
print()
print("| path | peer/machine → machine (Gbit/s) | machine → peer/machine (Gbit/s) | RTT avg (ms) |")
print("|---|---|---|---|")
for p, label in [("wireguard", "WireGuard peer (wg-quick + hangar-wg → gateway hangar-wg → bridge)"),
                 ("bridge", "machine on the same bridge (plain 6PN)")]:
    print(f"| {label} | {med(p, 2):.2f} | {med(p, 3):.2f} | {med(p, 4):.3f} |")
w, b = med("wireguard", 2), med("bridge", 2)
print()
print(f"WireGuard/bridge throughput: {w / b:.2f} (up), {med('wireguard', 3) / med('bridge', 3):.2f} (down); "
      f"RTT +{(med('wireguard', 4) - med('bridge', 4)) * 1000:.0f} µs")
PY
RESULTS="${RESULTS:-/tmp/hangar-bench-wireguard-results}"
mkdir -p "$RESULTS"
cp "$WORK/samples" "$WORK/report.md" "$RESULTS/"
echo "(report and samples in $RESULTS)" >&2
