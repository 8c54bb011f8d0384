#!/usr/bin/env bash
# Debian's Chromium for the Playwright browser tests (Playwright never downloads its own browser here).
set -euo pipefail
CHROMIUM="${RADASSIST_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "[browser] $CHROMIUM is missing and we are not root: run 'sudo apt-get install chromium' for the browser tests" >&2
  exit 0
fi
echo "[browser] installing Debian's chromium for the browser tests"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
"$CHROMIUM" --version
