#!/usr/bin/env bash
# Builds the Hermod container image (default tag hermod:local) without pulling
# any base image: it stages a root filesystem here — the release `hermod`
# binary, the shared libraries and loader it links against (found with ldd),
# the `hermod-probe` health check, a non-root user and /etc basics — then
# `docker build`s deploy/Dockerfile (FROM scratch) over it.
#
# usage: deploy/build-image.sh [--binary PATH] [--tag TAG] [--no-strip]
#   --binary PATH  use this prebuilt hermod binary (or env HERMOD_BINARY)
#                  instead of `cargo build --release`
#   --tag TAG      image tag (or env HERMOD_IMAGE; default hermod:local)
#   --no-strip     keep the binary's debug info (the release profile has line tables)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BINARY="${HERMOD_BINARY:-}"
TAG="${HERMOD_IMAGE:-hermod:local}"
STRIP=1
# The user the broker runs as inside the image.
HERMOD_UID=10001
HERMOD_GID=10001

die() { echo "build-image: $*" >&2; exit 1; }

while (($#)); do
    case "$1" in
        --binary) BINARY="${2:?--binary needs a path}"; shift 2 ;;
        --tag) TAG="${2:?--tag needs a tag}"; shift 2 ;;
        --no-strip) STRIP=0; shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

command -v docker >/dev/null || die "docker is missing"
command -v ldd >/dev/null || die "ldd is missing (it comes with libc-bin)"
command -v rustc >/dev/null || die "rustc is missing: it builds the health probe (install Rust: https://rustup.rs)"

started=$(date +%s)
if [ -z "$BINARY" ]; then
    cd "$ROOT"
    # shellcheck source=../scripts/bootstrap.sh
    source scripts/bootstrap.sh
    cargo build --release -p hermod-broker --bin hermod
    BINARY="$CARGO_TARGET_DIR/release/hermod"
fi
[ -f "$BINARY" ] && [ -x "$BINARY" ] || die "$BINARY is not an executable file"

context="$(mktemp -d "${TMPDIR:-/tmp}/hermod-image.XXXXXX")"
trap 'rm -rf "$context"' EXIT
rootfs="$context/rootfs"
# /data is staged apart: the Dockerfile copies it with the broker user as owner.
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp" "$context/data"
chmod 1777 "$rootfs/tmp"

cp "$BINARY" "$rootfs/usr/local/bin/hermod"
if ((STRIP)); then
    if command -v strip >/dev/null; then
        # Keeps the symbol table (function names in backtraces), drops line tables.
        strip --strip-debug "$rootfs/usr/local/bin/hermod"
    else
        echo "build-image: strip (binutils) is missing; the image keeps the debug info" >&2
    fi
fi
chmod 0755 "$rootfs/usr/local/bin/hermod"
rustc --edition 2021 -C opt-level=s -C strip=symbols \
    -o "$rootfs/usr/local/bin/hermod-probe" "$ROOT/deploy/probe.rs"

# Copies a file to the same path under the root filesystem, following links.
stage() {
    mkdir -p "$rootfs$(dirname "$1")"
    cp -L "$1" "$rootfs$1"
}

# Every library ldd resolves ("name => /path (addr)") and the loader ("/path (addr)").
for program in "$rootfs/usr/local/bin/hermod" "$rootfs/usr/local/bin/hermod-probe"; do
    ldd "$program" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
done | sort -u | while read -r lib; do
    stage "$lib"
done
if ldd "$rootfs/usr/local/bin/hermod" | grep -q "not found"; then
    die "a library of $BINARY is missing: $(ldd "$rootfs/usr/local/bin/hermod" | grep 'not found')"
fi
# glibc older than 2.34 loads its name-service modules with dlopen, which ldd
# does not show; newer ones have them built in.
libc_dir="$(dirname "$(ldd "$rootfs/usr/local/bin/hermod" | awk '$1 == "libc.so.6" {print $3}')")"
for module in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
    if [ -e "$libc_dir/$module" ]; then
        stage "$libc_dir/$module"
    fi
done

cat >"$rootfs/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
hermod:x:$HERMOD_UID:$HERMOD_GID:Hermod broker:/data:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<EOF
root:x:0:
hermod:x:$HERMOD_GID:
nogroup:x:65534:
EOF
cat >"$rootfs/etc/nsswitch.conf" <<EOF
passwd: files
group: files
hosts: files dns
EOF
# Docker and Kubernetes mount their own /etc/hosts; this one serves plain runtimes.
cat >"$rootfs/etc/hosts" <<EOF
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
EOF

cp "$ROOT/deploy/Dockerfile" "$context/Dockerfile"
# Without the buildx plugin the docker CLI falls back to the classic builder;
# the Dockerfile works with both.
if ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
fi
docker build --quiet --tag "$TAG" \
    --build-arg "HERMOD_UID=$HERMOD_UID" --build-arg "HERMOD_GID=$HERMOD_GID" \
    "$context" >/dev/null

# The image must at least start its binary with the staged libraries.
version="$(docker run --rm "$TAG" --version | head -n 1)" || die "the image does not run: docker run --rm $TAG --version failed"
# With no broker running, the probe must run and report the refused connection.
probe="$(docker run --rm --entrypoint /usr/local/bin/hermod-probe "$TAG" 2>&1 || true)"
case "$probe" in
    "hermod-probe /health/ready: "*) ;;
    *) die "the health probe does not run in the image: $probe" ;;
esac
size="$(docker image inspect --format '{{.Size}}' "$TAG")"
echo "built $TAG ($version): $((size / 1024 / 1024)) MiB in $(($(date +%s) - started)) s"
