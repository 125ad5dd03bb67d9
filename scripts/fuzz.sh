#!/usr/bin/env bash
# Fuzzes the manifest parser for a while (default 60 s) and fails on any crash.
# Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_rust
secs="${1:-60}"

if ! have cargo-fuzz; then
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
seeds=()
[ -d ../shared/conformance/flytoml/real ] && seeds+=("$(cd ../shared/conformance/flytoml/real && pwd)")

step "cargo fuzz run manifest (${secs}s)"
cd fuzz
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the pinned stable toolchain accept them.
RUSTC_BOOTSTRAP=1 cargo fuzz run manifest --target-dir "$CARGO_TARGET_DIR/fuzz" -- \
  -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 "$corpus" "${seeds[@]}"
