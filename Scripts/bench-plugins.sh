#!/usr/bin/env bash
# Builds the benchmark plugins (Sources/CKeelBenchNative/bench_plugin.c in its variants) into the folder $1, for
# Scripts/bench.sh and Scripts/icount.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$1"
src=Sources/CKeelBenchNative/bench_plugin.c
cflags=(-std=c11 -O2 -shared -fPIC -fvisibility=hidden -I PluginABI/include -I Sources/CKeelBenchNative/include -DBENCH_PLUGIN)
cc "${cflags[@]}" -DBENCH_TAG='"A"' -o "$work/libbenchA.so" "$src"
cc "${cflags[@]}" -DBENCH_TAG='"B"' -o "$work/libbenchB.so" "$src"
for i in 1 2 3; do cc "${cflags[@]}" -DBENCH_ID="\"authz$i\"" -DBENCH_AUTHZ -o "$work/libauthz$i.so" "$src"; done
cc "${cflags[@]}" -DBENCH_ID='"authzre"' -DBENCH_AUTHZ -DBENCH_FLAGS=KEEL_PLUGIN_FLAG_REACTIVATABLE -o "$work/libauthzre.so" "$src"
cc "${cflags[@]}" -DBENCH_ID='"b00000"' -o "$work/libtemplate.so" "$src"
cc "${cflags[@]}" -DBENCH_ID='""' -DBENCH_ROUTES -o "$work/libroutes.so" "$src"
cc "${cflags[@]}" -DBENCH_ID='"prova"' -DBENCH_PROVIDER -o "$work/libprova.so" "$src"
cc "${cflags[@]}" -DBENCH_ID='"provb"' -DBENCH_PROVIDER -o "$work/libprovb.so" "$src"
cc "${cflags[@]}" -DBENCH_ID='"user"' -DBENCH_CONSUMER -o "$work/libuser.so" "$src"
