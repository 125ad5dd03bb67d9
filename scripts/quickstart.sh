#!/usr/bin/env bash
# Hangar's main job, at this stage: build the CLI, then validate and normalise the example
# app's fly.toml and show the machine config each of its process groups gets.
# Usage: scripts/quickstart.sh [path/to/fly.toml]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_rust
config="${1:-examples/hello/fly.toml}"

step "building hangar (release)"
cargo build --release --locked -p hangar-cli
hangar="$CARGO_TARGET_DIR/release/hangar"

step "hangar config validate -c $config"
"$hangar" config validate -c "$config"

step "hangar config show -c $config"
"$hangar" config show -c "$config"

step "hangar config machines -c $config"
"$hangar" config machines -c "$config"
