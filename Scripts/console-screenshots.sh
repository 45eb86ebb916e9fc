#!/usr/bin/env bash
# Takes the README's console screenshots (docs/screenshots/*.png) from real headless Chromium: runs the console's
# operator browser test (BrowserTests/operatorViews: the examples, a commands plugin with a configuration schema, a
# failed plugin, a tenant, a role, a repository and a trusted key), which saves each view at 1280 px and the
# overview at 400 px. Needs chromium, chromium-driver and python3-selenium; pngquant, when installed, keeps the files
# small.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/docs/screenshots"
mkdir -p "$out"
swift build
KEEL_CONSOLE_SCREENSHOTS="$out" swift test --filter "BrowserTests/operatorViews"
ls -l "$out"
