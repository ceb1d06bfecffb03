#!/usr/bin/env bash
# Fetch real photos for the detector tests from Debian's `darknet` package (its sample images:
# dog.jpg has a pickup truck and a bicycle, person.jpg and kite.jpg have people; eagle, giraffe,
# horses and scream have no road users and serve as negatives).
#
#   bash models/fetch_samples.sh        # idempotent: does nothing when the samples are there
#
# Needs apt-get (Debian/Ubuntu). `apt-get download` needs no root; `apt-get update` (only run when the
# package is not known yet) does.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${V2X_MODELS_CACHE:-$here/.cache}"
samples="$cache/samples"
images=(dog.jpg person.jpg kite.jpg horses.jpg giraffe.jpg eagle.jpg scream.jpg)

have_all() {
    local image
    for image in "${images[@]}"; do
        [[ -s "$samples/$image" ]] || return 1
    done
}

if have_all; then
    echo "samples present in $samples"
    exit 0
fi

mkdir -p "$cache" "$samples"
cd "$cache"
if ! compgen -G "darknet_*.deb" >/dev/null; then
    if ! apt-get download darknet; then
        echo "darknet not known to apt yet; running apt-get update" >&2
        apt-get update
        apt-get download darknet
    fi
fi
deb="$(ls -1 darknet_*.deb | sort | tail -n 1)"
rm -rf "$cache/darknet"
dpkg -x "$deb" "$cache/darknet"
data="$cache/darknet/usr/share/darknet/data"
for image in "${images[@]}"; do
    cp "$data/$image" "$samples/$image"
done
# Keep the licence terms next to the photos.
cp "$cache/darknet/usr/share/doc/darknet/copyright" "$samples/COPYRIGHT.darknet"
echo "copied ${#images[@]} sample images from $deb to $samples"
