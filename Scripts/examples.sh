#!/usr/bin/env bash
# Builds everything (kernel, `keel`, the example plugins as .so files), stages the example bundles into ./plugins
# (plugin.yaml, its configuration schema if any, and its library), enables them, and lists what they registered.
#   Scripts/examples.sh            debug build
#   CONFIG=release Scripts/examples.sh
set -euo pipefail
cd "$(dirname "$0")/.."
config="${CONFIG:-debug}"
swift build -c "$config"
bin="$(swift build -c "$config" --show-bin-path)"
plugins="${KEEL_PLUGINS_DIR:-plugins}"
for bundle in Plugins/*/; do
  name="$(basename "$bundle")"
  lib="$(sed -n 's/^library:[[:space:]]*//p' "$bundle/plugin.yaml" | tr -d '"'\''[:space:]')"
  mkdir -p "$plugins/$name"
  cp "$bundle/plugin.yaml" "$plugins/$name/plugin.yaml"
  if [ -f "$bundle/config.schema.yaml" ]; then cp "$bundle/config.schema.yaml" "$plugins/$name/"; fi
  # Write to a temporary name, then rename: a running host never sees a half-written library.
  cp "$bin/$lib" "$plugins/$name/.$lib.tmp" && mv -f "$plugins/$name/.$lib.tmp" "$plugins/$name/$lib"
done
# Auth hooks see every request: the operator grants them explicitly.
"$bin/keel" plugins grant hello authenticate --plugins "$plugins"
"$bin/keel" plugins grant greeter authorize --plugins "$plugins"
"$bin/keel" plugins enable hello --plugins "$plugins"
"$bin/keel" plugins enable greeter --plugins "$plugins"
"$bin/keel" plugins list --plugins "$plugins"
