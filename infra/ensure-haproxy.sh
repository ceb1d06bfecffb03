#!/usr/bin/env bash
# Installs Debian's HAProxy (the gRPC front of infra/haproxy/, tested by tests/infra/test_haproxy.py) when it is
# missing (needs root or sudo).
set -euo pipefail
pkg=haproxy
command -v haproxy >/dev/null 2>&1 && exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing $pkg..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -qq "$pkg" >/dev/null 2>&1 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "$pkg" >/dev/null; }
command -v haproxy >/dev/null 2>&1 || { echo "could not install $pkg" >&2; exit 1; }
