#!/usr/bin/env bash
# The gate: exactly what CI runs. Formatting, lints (warnings are errors), then every test.
# Usage: scripts/test.sh            (from anywhere; installs what it needs, idempotently)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

ensure_rust
ensure_nextest
# Real parts the tests use: namespaces and bridges (iproute2), a static busybox to build test
# images offline, libseccomp for the container runtime, skopeo and Debian's registry for pulls.
apt_install iproute2 busybox-static pkg-config libseccomp-dev skopeo docker-registry

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
