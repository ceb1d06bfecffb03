#!/usr/bin/env bash
# Installs Debian's Chromium (the browser the console's Playwright tests drive, tests/console/) and a CJK font for it
# (the district's lot names are Chinese) when they are missing (needs root or sudo). Playwright's own browser
# download is never used: no host but the package registries is reachable.
set -euo pipefail
font=/usr/share/fonts/truetype/wqy/wqy-microhei.ttc
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -s "$font" ] || missing+=(fonts-wqy-microhei)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing ${missing[*]}..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; }
[ -x /usr/bin/chromium ] && [ -s "$font" ] || { echo "could not install ${missing[*]}" >&2; exit 1; }
