#!/usr/bin/env bash
# Saves PNGs of the console's main pages into docs/console/ (shown in
# docs/console.md): the browser tests, run with FANIN_CONSOLE_SCREENSHOTS
# set, take them as they go. Needs chromium and chromium-driver.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromedriver >/dev/null || { echo "chromedriver not installed (apt-get install chromium chromium-driver)" >&2; exit 1; }
mkdir -p docs/console
FANIN_CONSOLE_SCREENSHOTS="$PWD/docs/console" cargo test --locked --test console_browser
ls -l docs/console/*.png
