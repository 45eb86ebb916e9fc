#!/usr/bin/env bash
# Builds the Rust SDK example Plugins/notes-rust (on the crate sdk/rust/keel-plugin) with `cargo build --offline
# --release` and copies it into DIR as libnotes_rust.so. Cargo's target folder is $CARGO_TARGET_DIR, else
# $TMPDIR/keel-rust-target (so cargo rebuilds only what changed). Without cargo it prints one notice and exits 0,
# so a caller can skip the bundle (its library is then missing).
#   Scripts/build-rust-sdk-example.sh DIR
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "build-rust-sdk-example.sh: error: expected one argument, the output folder (see --help)" >&2
  exit 64
fi
if [ -d "$HOME/.cargo/bin" ]; then PATH="$HOME/.cargo/bin:$PATH"; fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "build-rust-sdk-example.sh: notice: cargo not found, Plugins/notes-rust not built (install Rust to include it)"
  exit 0
fi
mkdir -p "$1"
out="$(cd "$1" && pwd)" # resolved from the caller's folder, before moving to the repository root
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${TMPDIR:-/tmp}/keel-rust-target}"
cargo build --offline --release --quiet --manifest-path Plugins/notes-rust/Cargo.toml
# Copy under a temporary name, then rename: a running host never sees a half-written library.
cp "$CARGO_TARGET_DIR/release/libnotes_rust.so" "$out/.libnotes_rust.so.tmp"
mv -f "$out/.libnotes_rust.so.tmp" "$out/libnotes_rust.so"
echo "build-rust-sdk-example.sh: built $out/libnotes_rust.so"
