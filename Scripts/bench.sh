#!/usr/bin/env bash
# Keel's benchmark suite: every result as a ratio against a baseline measured in the same run.
#   Scripts/bench.sh           full run (a few minutes)
#   Scripts/bench.sh --quick   smoke run (CI), small sizes
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q && apt-get install -y -q --no-install-recommends wrk
fi
Scripts/release-build.sh --product keel-bench
bin="$(Scripts/release-build.sh --show-bin-path)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
Scripts/bench-plugins.sh "$work"
cc -O2 -o "$work/raw_loader" Scripts/raw_loader.c -ldl
# libextism for the alternatives section, from the extism-sys wheel when it is installed (the suite says when it is not).
extism=()
lib="$(python3 -c 'import extism_sys, os; print(os.path.join(os.path.dirname(extism_sys.__file__), "libextism_sys.so"))' 2>/dev/null || true)"
if [ -n "$lib" ] && [ -f "$lib" ]; then extism=(--extism "$lib"); fi
"$bin/keel-bench" --work "$work/run" --plugin-a "$work/libbenchA.so" --plugin-b "$work/libbenchB.so" \
  --authz "$work/libauthz1.so" --authz "$work/libauthz2.so" --authz "$work/libauthz3.so" \
  --load-template "$work/libtemplate.so" --routes-template "$work/libroutes.so" --raw-loader "$work/raw_loader" \
  --provider-a "$work/libprova.so" --provider-b "$work/libprovb.so" --consumer "$work/libuser.so" \
  --reactivatable "$work/libauthzre.so" "${extism[@]}" "$@"
