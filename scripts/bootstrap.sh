#!/usr/bin/env bash
# Installs what building Hermod needs on a fresh Debian machine, then exports
# the cargo target directory. Sourced by the other scripts.
set -euo pipefail

# RocksDB's C++ build takes 10+ minutes: keep its output outside the clone so
# every checkout on this machine shares it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hermod/target}"
mkdir -p "$CARGO_TARGET_DIR"

need_apt=()
# The rocksdb crate generates its bindings with bindgen, which needs libclang.
# libclang-cpp (LLVM's C++ library) is often present without it and does not count.
if ! compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null \
    && ! compgen -G "/usr/lib/llvm-*/lib/libclang-[0-9]*.so*" >/dev/null \
    && ! compgen -G "/usr/lib/*/libclang-[0-9]*.so*" >/dev/null \
    && ! compgen -G "/usr/lib/*/libclang.so*" >/dev/null; then
    need_apt+=(libclang-dev)
fi
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
# apt_install WHO PACKAGE...: installs Debian packages, saying who needs them.
apt_install() {
    local who="$1"
    shift
    echo "$who: installing $* with apt-get" >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
if ((${#need_apt[@]})); then
    apt_install bootstrap "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "bootstrap: cargo is missing; install Rust (https://rustup.rs) and run again" >&2
    exit 1
fi
