#!/usr/bin/env bash
# Fuzzes the parsers for a while (default 60 s in all) and fails on any crash: a quarter of
# the time on API request parsing (the router in process), a sixth on the proxy's parsers
# (Host, fly-replay), a tenth on the DNS server's query path, of the rest two thirds on the
# manifest parser and the remainder on the metrics text parser (scraped app metrics).
# Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_rust
secs="${1:-60}"
api_secs=$(( secs / 4 ))
[ "$api_secs" -ge 1 ] || api_secs=1
proxy_secs=$(( secs / 6 ))
[ "$proxy_secs" -ge 1 ] || proxy_secs=1
dns_secs=$(( secs / 10 ))
[ "$dns_secs" -ge 1 ] || dns_secs=1
secs=$(( secs > api_secs + proxy_secs + dns_secs ? secs - api_secs - proxy_secs - dns_secs : 1 ))
manifest_secs=$(( secs * 2 / 3 ))
[ "$manifest_secs" -ge 1 ] || manifest_secs=1
metrics_secs=$(( secs - manifest_secs ))
[ "$metrics_secs" -ge 1 ] || metrics_secs=1

if ! have cargo-fuzz; then
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/manifest" "$work/metrics" "$work/metrics-seeds" "$work/api" "$work/api-seeds" \
  "$work/proxy" "$work/proxy-seeds" "$work/dns" "$work/dns-seeds"
seeds=()
[ -d ../shared/conformance/flytoml/real ] && seeds+=("$(cd ../shared/conformance/flytoml/real && pwd)")
# A few expositions to start the metrics fuzzer from.
printf '# HELP a_total Requests.\n# TYPE a_total counter\na_total{path="/x",code="200"} 12 1700000000000\n' \
  >"$work/metrics-seeds/counter"
printf '# TYPE h histogram\nh_bucket{le="0.1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 0.3\nh_count 2\n# EOF\n' \
  >"$work/metrics-seeds/histogram"
printf 'x{a="q\\"\\\\\\n",b=""} NaN\ny -Inf\r\n# comment\n\tz{} 1e-7\n' >"$work/metrics-seeds/escapes"

cd fuzz
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the pinned stable toolchain accept them.
step "cargo fuzz run manifest (${manifest_secs}s)"
RUSTC_BOOTSTRAP=1 cargo fuzz run manifest --target-dir "$CARGO_TARGET_DIR/fuzz" -- \
  -max_total_time="$manifest_secs" -rss_limit_mb=2048 -max_len=65536 "$work/manifest" "${seeds[@]}"

step "cargo fuzz run metrics_text (${metrics_secs}s)"
RUSTC_BOOTSTRAP=1 cargo fuzz run metrics_text --target-dir "$CARGO_TARGET_DIR/fuzz" -- \
  -max_total_time="$metrics_secs" -rss_limit_mb=2048 -max_len=65536 "$work/metrics" "$work/metrics-seeds"

# API requests: byte 0 the method, byte 1 token/content-type/route (see the target's docs),
# then a path or query line, then the body.
printf '\001\034\n{"config":{"image":"img:1","env":{"A":"1"},"stop_config":{"timeout":"3s"}},"skip_launch":true,"lease_ttl":5}' \
  >"$work/api-seeds/create"
printf '\001\064\n{"signal":"SIGTERM","timeout":"3s"}' >"$work/api-seeds/stop"
printf '\000\140state=started&timeout=1\n' >"$work/api-seeds/wait"
printf '\001\004/v1/apps/{app}/machines/{id}/metadata/k%%FF?x=%%zz\n{"value":"v"}' >"$work/api-seeds/raw"
printf '\003\040force=true&kill=1\n' >"$work/api-seeds/destroy"
printf '\001\214ttl=30\n{"ttl":30,"description":"d"}' >"$work/api-seeds/lease"
printf '\001\014\n{"app_name":"x","org_slug":"personal","network":"blue"}' >"$work/api-seeds/app"
printf '\002\034\n[null,null]' >"$work/api-seeds/put"

step "cargo fuzz run api_request (${api_secs}s)"
RUSTC_BOOTSTRAP=1 cargo fuzz run api_request --target-dir "$CARGO_TARGET_DIR/fuzz" -- \
  -max_total_time="$api_secs" -rss_limit_mb=2048 -max_len=65536 "$work/api" "$work/api-seeds"

# Proxy parsers: byte 0 (mod 9) picks Host (0), the fly-replay header (1) or its JSON form (2),
# ..., a client's request head (6), a pg_tls opening (7) or an ACME DNS query (8).
printf '\000web.localhost:8080' >"$work/proxy-seeds/host"
printf '\001region="iad,ord";state=abc;elsewhere=true;timeout=800ms;fallback=prefer_self' \
  >"$work/proxy-seeds/replay"
printf '\002{"app":"b","transform":{"path":"/x?y","set_headers":[{"name":"a","value":"b"}]}}' \
  >"$work/proxy-seeds/json"
# The same two with fly-replay caching: a pattern (byte 1 also reads as one), a JSON cache.
printf '\001tenant.example/t/1/*' >"$work/proxy-seeds/replay-cache"
printf '\002{"app":"b","cache":{"prefix":"/t/*","ttl":"2m"},"allow_bypass":true}' \
  >"$work/proxy-seeds/json-cache"
# Byte 6: a client's request head (the HTTP/1.1 fast path), pipelined.
printf '\006GET /a?b HTTP/1.1\r\nhost: web.localhost\r\nconnection: close\r\n\r\nGET / HTTP/1.1\r\n' \
  >"$work/proxy-seeds/h1"
printf '\006POST /b HTTP/1.1\r\nhost: web.localhost\r\ncontent-length: 3\r\n\r\nabc' \
  >"$work/proxy-seeds/h1-body"
# Byte 7: a pg_tls client's SSLRequest; byte 8: a TXT query to the ACME DNS zone (UDP).
printf '\007\000\000\000\010\004\322\026\057' >"$work/proxy-seeds/pg-ssl"
printf '\010\022\064\001\000\000\001\000\000\000\000\000\000\001x\004acme\006hangar\004test\000\000\020\000\001' \
  >"$work/proxy-seeds/acme-dns"

step "cargo fuzz run proxy_parsers (${proxy_secs}s)"
RUSTC_BOOTSTRAP=1 cargo fuzz run proxy_parsers --target-dir "$CARGO_TARGET_DIR/fuzz" -- \
  -max_total_time="$proxy_secs" -rss_limit_mb=2048 -max_len=16384 "$work/proxy" "$work/proxy-seeds"

# DNS queries: byte 0 the asker (and with 0x80: a name follows instead of a message), byte 1
# the transport (odd: TCP) or, for names, bytes 1-2 the type.
printf '\001\000\102\102\001\000\000\001\000\000\000\000\000\000\003web\010internal\000\000\034\000\001' \
  >"$work/dns-seeds/aaaa"
printf '\001\001\102\102\001\000\000\001\000\000\000\001\003vms\003big\010internal\000\000\020\000\001\000\000\051\004\320\000\000\000\000\000\000' \
  >"$work/dns-seeds/txt-edns-tcp"
printf '\205\000\034top3.nearest.of.web.internal' >"$work/dns-seeds/nearest"
printf '\201\000\034primary.role.kv._metadata.web.internal' >"$work/dns-seeds/kv"
printf '\202\000\020all._instances.internal' >"$work/dns-seeds/instances"

step "cargo fuzz run dns_query (${dns_secs}s)"
RUSTC_BOOTSTRAP=1 cargo fuzz run dns_query --target-dir "$CARGO_TARGET_DIR/fuzz" -- \
  -max_total_time="$dns_secs" -rss_limit_mb=2048 -max_len=4096 "$work/dns" "$work/dns-seeds"
