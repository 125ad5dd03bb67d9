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
# images offline, libseccomp for the container runtime, skopeo and Debian's registry for pulls,
# pebble (a test ACME CA) for certificate issuance, dig (bind9-dnsutils) for the DNS tests,
# wg and wg-quick (wireguard-tools; no kernel module needed) for the WireGuard tests, a
# PostgreSQL server and psql for the proxy's `pg_tls` tests.
apt_install iproute2 nftables busybox-static pkg-config libseccomp-dev skopeo docker-registry pebble \
  bind9-dnsutils postgresql
# wireguard-tools without what it recommends (a kernel module through dkms): userspace is enough.
if ! dpkg -s wireguard-tools >/dev/null 2>&1; then
  step "apt-get install --no-install-recommends wireguard-tools"
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends wireguard-tools
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
if have cargo-nextest; then
  # nextest does not run doctests: those first, so nextest's summary closes the output.
  cargo test --workspace --locked --doc --quiet
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  cargo nextest run --workspace --locked --no-fail-fast 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  # "Summary [ 51s] 315 tests run: 315 passed, 0 skipped" → "315 passed, 0 failed" for CI.
  if [ -n "${HANGAR_TEST_SUMMARY:-}" ]; then
    passed=$(grep -Eo '[0-9]+ passed' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
    failed=$(grep -Eo '[0-9]+ failed' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
    echo "${passed:-0} passed, ${failed:-0} failed" > "$HANGAR_TEST_SUMMARY"
  fi
  exit "$status"
else
  cargo test --workspace --locked --no-fail-fast
fi
