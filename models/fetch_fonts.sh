#!/usr/bin/env bash
# A CJK font for rendering synthetic Chinese licence plates (tests, benchmark, simulator):
# WenQuanYi Micro Hei from Debian's fonts-wqy-microhei. Uses the installed font when there is one,
# else unpacks the package into the models cache (`apt-get download` + `dpkg -x`: no root needed;
# `apt-get update` runs only when the package is not known yet, and that needs root).
#
#   bash models/fetch_fonts.sh        # idempotent; prints the font path
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${V2X_MODELS_CACHE:-$here/.cache}"
system_font=/usr/share/fonts/truetype/wqy/wqy-microhei.ttc
cached_font="$cache/fonts/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"

if [[ -s "$system_font" ]]; then
    echo "$system_font"
    exit 0
fi
if [[ -s "$cached_font" ]]; then
    echo "$cached_font"
    exit 0
fi
mkdir -p "$cache"
cd "$cache"
if ! compgen -G "fonts-wqy-microhei_*.deb" >/dev/null; then
    if ! apt-get download fonts-wqy-microhei >&2; then
        echo "fonts-wqy-microhei not known to apt yet; running apt-get update" >&2
        apt-get update >&2
        apt-get download fonts-wqy-microhei >&2
    fi
fi
deb="$(ls -1 fonts-wqy-microhei_*.deb | sort | tail -n 1)"
rm -rf "$cache/fonts"
dpkg -x "$deb" "$cache/fonts"
echo "$cached_font"
