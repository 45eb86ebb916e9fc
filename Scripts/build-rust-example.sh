#!/usr/bin/env bash
# Builds the Rust example plugin Plugins/flux-sync into DIR as libflux-sync.so, with rustc alone (no cargo, no
# crates). Rebuilds only when lib.rs is newer than the library. Without rustc it prints one notice and exits 0, so
# a caller can skip the bundle (its library is then missing).
#   Scripts/build-rust-example.sh DIR
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "build-rust-example.sh: error: expected one argument, the output folder (see --help)" >&2
  exit 64
fi
if ! command -v rustc >/dev/null 2>&1; then
  echo "build-rust-example.sh: notice: rustc not found, Plugins/flux-sync not built (install Rust to include it)"
  exit 0
fi
mkdir -p "$1"
out="$(cd "$1" && pwd)" # resolved from the caller's folder, before moving to the repository root
cd "$(dirname "$0")/.."
src=Plugins/flux-sync/lib.rs
lib="$out/libflux-sync.so"
if [ -f "$lib" ] && [ "$lib" -nt "$src" ]; then
  echo "build-rust-example.sh: $lib is up to date"
  exit 0
fi
# Write to a temporary name, then rename: a running host never sees a half-written library.
rustc --edition 2021 --crate-type cdylib -O -o "$out/.libflux-sync.so.tmp" "$src"
mv -f "$out/.libflux-sync.so.tmp" "$lib"
echo "build-rust-example.sh: built $lib"
