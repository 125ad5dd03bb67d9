#!/usr/bin/env bash
# Peer figure for BENCHMARKS.md: `runc run` of /bin/true in the same busybox rootfs the Rust
# bench uses, N times; prints p50/p99 in ms. Needs root and Debian's `runc` and
# `busybox-static`. Usage: benches/runc.sh [N]   (default 100)
set -euo pipefail
n="${1:-100}"
command -v runc >/dev/null || { echo "install Debian's runc package" >&2; exit 2; }
[ -x /bin/busybox ] || { echo "install Debian's busybox-static package" >&2; exit 2; }
dir="$(mktemp -d /tmp/hangar-runc-bench.XXXXXX)"
root="$dir/state"
trap 'runc --root "$root" delete -f hangar-runc-bench >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/bundle/rootfs/bin" "$root"
cp /bin/busybox "$dir/bundle/rootfs/bin/busybox"
for a in sh true echo; do ln -s busybox "$dir/bundle/rootfs/bin/$a"; done
cd "$dir/bundle"
runc spec
sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"\/bin\/true"/' config.json
times=()
for _ in $(seq "$n"); do
  t0=$(date +%s%N)
  runc --root "$root" run hangar-runc-bench </dev/null >/dev/null
  t1=$(date +%s%N)
  times+=($(( (t1 - t0) / 1000 )))
done
printf '%s\n' "${times[@]}" | sort -n | awk -v n="$n" '
  { a[NR] = $1 }
  END { printf "runc run /bin/true: n=%d p50=%.1f ms p99=%.1f ms\n", n, a[int(n*0.5)+0]/1000, a[int(n*0.99)+0]/1000 }'
