# Shared helpers for the scripts in this directory. Sourced, not run.

step() { printf '\n==> %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# One target dir for every step (and for CI), so nothing is built twice.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(pwd)/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

ensure_rust() {
  if ! have cargo; then
    # rustup's default install location, if the toolchain is there but not on PATH.
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      echo "error: cargo not found. Install the Rust toolchain (https://rustup.rs) and retry." >&2
      exit 2
    fi
  fi
}

ensure_nextest() {
  if ! have cargo-nextest; then
    step "installing cargo-nextest"
    cargo install cargo-nextest --locked || echo "warning: cargo-nextest unavailable; using cargo test" >&2
  fi
}

apt_install() {
  # apt_install PKG...: installs the missing ones (root or sudo), idempotent.
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  step "apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}
