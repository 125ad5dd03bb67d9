#!/usr/bin/env bash
# The gate: exactly what CI runs. Formatting, lints (warnings are errors), then every test.
# Usage: scripts/test.sh            (from anywhere; installs what it needs, idempotently)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

ensure_rust
ensure_nextest

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
if have cargo-nextest; then
  cargo nextest run --workspace --locked --no-fail-fast
  # nextest does not run doctests
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi
