#!/usr/bin/env bash
# The store's tests run against a real PostgreSQL: install the server binaries from
# Debian's packages when they are missing. The tests start their own throwaway cluster.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
  echo "PostgreSQL is missing and this user cannot install it: apt-get install postgresql" >&2
  exit 1
fi
SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
echo "Installing PostgreSQL from Debian's packages..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
