#!/usr/bin/env bash
# The browser the console test drives (playwright-core, which downloads no browser of
# its own): Debian's Chromium at /usr/bin/chromium, or CHROMIUM_PATH. Idempotent:
# does nothing when it is already there. Needs root (CI and the dev machines are).
set -euo pipefail
path="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ -x "$path" ]; then
  echo "chromium: $path is there"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium: $path is missing and there is no apt-get; install Chromium and set CHROMIUM_PATH" >&2
  exit 1
fi
echo "chromium: installing Debian's chromium package"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
"$path" --version 2>/dev/null || true
