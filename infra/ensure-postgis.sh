#!/usr/bin/env bash
# Installs Debian's PostGIS for PostgreSQL 15 when it is missing (needs root or sudo).
set -euo pipefail
pkg=postgresql-15-postgis-3
dpkg -s "$pkg" >/dev/null 2>&1 && exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing $pkg (PostGIS for PostgreSQL 15)..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -qq "$pkg" >/dev/null 2>&1 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "$pkg" >/dev/null; }
dpkg -s "$pkg" >/dev/null 2>&1 || { echo "could not install $pkg" >&2; exit 1; }
