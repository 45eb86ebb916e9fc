#!/usr/bin/env bash
# Builds everything (kernel, `keel`, the example plugins as .so files), stages the example bundles into ./plugins
# (plugin.yaml, its configuration schema if any, and its library), enables them, and serves them until Ctrl-C,
# printing the console's URL and how to log in.
#   Scripts/examples.sh                       serve on http://127.0.0.1:8470 (KEEL_PORT=N for another port)
#   Scripts/examples.sh --check               CI: serve on a free port, ask /healthz and a plugin route, then stop
#   KEEL_EXAMPLES_CHECK=1 Scripts/examples.sh the same as --check
#   CONFIG=release Scripts/examples.sh        release build
#   KEEL_BIN=DIR Scripts/examples.sh          use the keel and libraries already built in DIR (no build)
# KEEL_PLUGINS_DIR and KEEL_STATE choose the plugin folder and state file, as for every keel command.
set -euo pipefail
cd "$(dirname "$0")/.."
check="${KEEL_EXAMPLES_CHECK:-0}"
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "examples.sh: error: unknown argument \"$arg\" (see --help)" >&2; exit 64 ;;
  esac
done
step() { echo "==> $*"; }

config="${CONFIG:-debug}"
if [ -n "${KEEL_BIN:-}" ]; then
  bin="$KEEL_BIN"
else
  step "building the kernel, keel and the example plugins (swift build -c $config; the first build takes several minutes)"
  if [ "$config" = release ]; then build=(Scripts/release-build.sh); else build=(swift build -c "$config"); fi
  "${build[@]}"
  bin="$("${build[@]}" --show-bin-path)"
fi
plugins="${KEEL_PLUGINS_DIR:-plugins}"

step "building the Rust example plugin flux-sync into $bin (rustc; skipped without it)"
Scripts/build-rust-example.sh "$bin"
step "building the Rust SDK example plugin notes-rust into $bin (cargo --offline; skipped without it)"
Scripts/build-rust-sdk-example.sh "$bin"

step "staging the example plugins into $plugins"
staged=" "
for bundle in Plugins/*/; do
  name="$(basename "$bundle")"
  lib="$(sed -n 's/^library:[[:space:]]*//p' "$bundle/plugin.yaml" | tr -d '"'\''[:space:]')"
  if [ ! -f "$bin/$lib" ]; then
    echo "examples.sh: notice: $bin/$lib is missing, $name is not staged"
    continue
  fi
  staged+="$name "
  mkdir -p "$plugins/$name"
  cp "$bundle/plugin.yaml" "$plugins/$name/plugin.yaml"
  if [ -f "$bundle/config.schema.yaml" ]; then cp "$bundle/config.schema.yaml" "$plugins/$name/"; fi
  if [ -d "$bundle/assets" ]; then rm -rf "$plugins/$name/assets" && cp -R "$bundle/assets" "$plugins/$name/assets"; fi
  # Write to a temporary name, then rename: a running host never sees a half-written library.
  cp "$bin/$lib" "$plugins/$name/.$lib.tmp" && mv -f "$plugins/$name/.$lib.tmp" "$plugins/$name/$lib"
done

step "granting the auth capabilities and enabling the examples (each new build is probed in a child process first)"
# Auth hooks see every request: the operator grants them explicitly.
# (A bundle not staged, such as greeter-swift where the binaries came without a Swift build, is skipped as noticed above.)
if [[ "$staged" == *" hello-c "* ]]; then
  "$bin/keel" plugins grant hello authenticate --plugins "$plugins"
  "$bin/keel" plugins enable hello --plugins "$plugins"
fi
if [[ "$staged" == *" greeter-swift "* ]]; then
  "$bin/keel" plugins grant greeter authorize --plugins "$plugins"
  "$bin/keel" plugins enable greeter --plugins "$plugins"
fi
# Services between plugins: two providers of gitops.sync/1 (argo-sync ranks higher, so it serves until the operator
# chooses with `keel services use`), then their consumer; and notes-rust, on the Rust SDK. The folder names equal
# the plugin ids.
for id in argo-sync flux-sync deployer inventory notes-rust; do
  if [[ "$staged" == *" $id "* ]]; then "$bin/keel" plugins enable "$id" --plugins "$plugins"; fi
done

if [ "$check" != 1 ]; then
  # Run again while a server is up (after editing a plugin): that server has already taken the new build.
  lock="${KEEL_STATE:-.keel/state.db}.lock"
  if [ -f "$lock" ] && ! flock -n -s "$lock" true 2>/dev/null; then
    step "a keel server already serves these plugins ($(cut -d' ' -f3- "$lock")); it has taken the new build"
    exit 0
  fi
  step "serving (open the console URL below in a browser; Ctrl-C stops)"
  exec "$bin/keel" serve --plugins "$plugins" --port "${KEEL_PORT:-8470}"
fi

# --check: serve on a free port, wait for "listening on", ask the routes, stop with SIGTERM.
step "checking: serving on a free port, asking /healthz, /ext/hello/greet/ci and /ext/deployer/sync/ci, then stopping"
log="$(mktemp)"
# With a token of its own from the environment, nothing is stored: the admin token is still made, and shown, by the
# first real `Scripts/examples.sh` (a check run would otherwise use up the one showing, into its discarded log).
KEEL_ADMIN_TOKEN="${KEEL_ADMIN_TOKEN:-examples-check-$$-$RANDOM}" "$bin/keel" serve --plugins "$plugins" --port 0 >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
url=""
for _ in $(seq 1 600); do
  url="$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$log" | head -n 1)"
  if [ -n "$url" ] || ! kill -0 "$server" 2>/dev/null; then break; fi
  sleep 0.1
done
cat "$log"
if [ -z "$url" ]; then
  if ! kill -0 "$server" 2>/dev/null; then echo "examples.sh: error: keel serve exited before listening (its error is above)" >&2
  else echo "examples.sh: error: keel serve did not start within 60 s" >&2; fi
  exit 1
fi
health="$(curl -fsS --max-time 10 "$url/healthz")"
echo "GET $url/healthz -> $health"
greeting="$(curl -fsS --max-time 10 "$url/ext/hello/greet/ci")"
echo "GET $url/ext/hello/greet/ci -> $greeting"
if [[ "$staged" == *" deployer "* ]]; then
  synced="$(curl -fsS --max-time 10 "$url/ext/deployer/sync/ci")"
  echo "GET $url/ext/deployer/sync/ci -> $synced"
fi
kill -TERM "$server"
wait "$server"
trap 'rm -f "$log"' EXIT
step "check passed: the examples were served and answered"
