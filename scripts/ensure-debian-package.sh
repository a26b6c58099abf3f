#!/usr/bin/env bash
# Install a Debian package when the file it provides is missing:
#   scripts/ensure-debian-package.sh PACKAGE PATH-GLOB
# The tests need real PostgreSQL server binaries (they start their own throwaway cluster)
# and Debian's Chromium (the sidebar's browser tests never download a browser).
set -euo pipefail
package=$1
provides=$2
# shellcheck disable=SC2086 # the glob is meant to expand
if ls $provides >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
  echo "$package is missing and this user cannot install it: apt-get install $package" >&2
  exit 1
fi
SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
echo "Installing $package from Debian's packages..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$package" >/dev/null
