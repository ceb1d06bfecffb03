#!/usr/bin/env bash
# Installs Debian's Chromium (the browser the console's Playwright tests drive, tests/console/) when it is missing
# (needs root or sudo). Playwright's own browser download is never used: no host but the package registries is
# reachable.
set -euo pipefail
pkg=chromium
[ -x /usr/bin/chromium ] && exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing $pkg..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -qq "$pkg" >/dev/null 2>&1 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "$pkg" >/dev/null; }
[ -x /usr/bin/chromium ] || { echo "could not install $pkg" >&2; exit 1; }
