#!/usr/bin/env bash
# Hangar's main job on a fresh Debian 12 machine: installs what it needs, builds Hangar,
# starts hangard (if it is not running yet), builds the example app's image offline with
# Hangar's own tooling, deploys it with `hangar deploy` and prints its URL, which answers.
#
# Usage (as root, or a user with sudo): scripts/quickstart.sh
# Environment: HANGAR_DATA_DIR (default /var/lib/hangar), HANGAR_HTTP_PORT (the port the
# edge proxy serves the app's port 80 on; default 80).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E bash "$0" "$@"
fi
source scripts/lib.sh

apt_install ca-certificates curl build-essential pkg-config libseccomp-dev iproute2 nftables \
  busybox-static
ensure_rust

data="${HANGAR_DATA_DIR:-/var/lib/hangar}"
http_port="${HANGAR_HTTP_PORT:-80}"
api="http://127.0.0.1:4280"
bin="$CARGO_TARGET_DIR/release"

step "building hangard and hangar (release)"
cargo build --release --locked -p hangar-daemon -p hangar-cli
step "building the static hangar-init (PID 1 of every machine)"
init_target="$CARGO_TARGET_DIR/hangar-init-static"
RUSTFLAGS="-C target-feature=+crt-static" LIBSECCOMP_LINK_TYPE=static \
  LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu CARGO_TARGET_DIR="$init_target" \
  cargo build --locked --release -p hangar-runtime --bin hangar-init \
  --target x86_64-unknown-linux-gnu
install -m 0755 "$init_target/x86_64-unknown-linux-gnu/release/hangar-init" "$bin/hangar-init"

if [ "$(curl -s -o /dev/null -w '%{http_code}' "$api/v1/apps" || true)" = "000" ]; then
  step "starting hangard (data in $data, log in $data/hangard.log)"
  mkdir -p "$data"
  proxy_port=()
  [ "$http_port" = 80 ] || proxy_port=(--proxy-port "80=$http_port")
  setsid nohup "$bin/hangard" --data-dir "$data" "${proxy_port[@]}" \
    >>"$data/hangard.log" 2>&1 < /dev/null &
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$api/v1/apps" || true)" != "000" ] && break
    sleep 0.1
  done
else
  step "hangard is already running at $api"
fi
export HANGAR_DATA_DIR="$data"

step "building the example image (examples/hello/app on busybox) with hangar image pack"
root="$CARGO_TARGET_DIR/hello-rootfs"
rm -rf "$root"
mkdir -p "$root/bin" "$root/tmp" "$root/etc"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
cp -a examples/hello/app "$root/app"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
"$bin/hangar" image pack "$root" -o "$CARGO_TARGET_DIR/hello.tar" --tag latest \
  --cmd /app/bin/hello --cmd serve -e PATH=/app/bin:/bin --expose 8080/tcp

step "the app and its secret (staged: the deploy gives it to the machines)"
"$bin/hangar" apps create hello >/dev/null 2>&1 || true
"$bin/hangar" secrets set -a hello --stage \
  "HELLO_SECRET=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"

step "hangar deploy -c examples/hello"
"$bin/hangar" deploy -c examples/hello --image "$CARGO_TARGET_DIR/hello.tar"

url="http://hello.localhost/"
[ "$http_port" = 80 ] || url="http://hello.localhost:$http_port/"
step "curl $url"
curl -fsS --retry 10 --retry-connrefused --retry-delay 1 \
  --resolve "hello.localhost:$http_port:127.0.0.1" "$url"
echo
echo "The example app is deployed at $url"
echo "  hangar status -a hello     # its machines"
echo "  hangar logs -a hello       # their output, with the platform's lines"
echo "  curl ${url}cgi-bin/index     # which machine answered, the secret is set, visits on its volume"
