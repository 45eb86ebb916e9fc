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
swift build -c release --product keel-bench
bin="$(swift build -c release --show-bin-path)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
src=Sources/CKeelBenchNative/bench_plugin.c
cflags=(-std=c11 -O2 -shared -fPIC -fvisibility=hidden -I PluginABI/include -I Sources/CKeelBenchNative/include -DBENCH_PLUGIN)
cc "${cflags[@]}" -DBENCH_TAG='"A"' -o "$work/libbenchA.so" "$src"
cc "${cflags[@]}" -DBENCH_TAG='"B"' -o "$work/libbenchB.so" "$src"
for i in 1 2 3; do cc "${cflags[@]}" -DBENCH_ID="\"authz$i\"" -DBENCH_AUTHZ -o "$work/libauthz$i.so" "$src"; done
cc "${cflags[@]}" -DBENCH_ID='"b00000"' -o "$work/libtemplate.so" "$src"
cc "${cflags[@]}" -DBENCH_ID='"prova"' -DBENCH_PROVIDER -o "$work/libprova.so" "$src"
cc "${cflags[@]}" -DBENCH_ID='"provb"' -DBENCH_PROVIDER -o "$work/libprovb.so" "$src"
cc "${cflags[@]}" -DBENCH_ID='"user"' -DBENCH_CONSUMER -o "$work/libuser.so" "$src"
cc -O2 -o "$work/raw_loader" Scripts/raw_loader.c -ldl
"$bin/keel-bench" --work "$work/run" --plugin-a "$work/libbenchA.so" --plugin-b "$work/libbenchB.so" \
  --authz "$work/libauthz1.so" --authz "$work/libauthz2.so" --authz "$work/libauthz3.so" \
  --load-template "$work/libtemplate.so" --raw-loader "$work/raw_loader" \
  --provider-a "$work/libprova.so" --provider-b "$work/libprovb.so" --consumer "$work/libuser.so" "$@"
