#!/usr/bin/env bash
# scripts/deps.sh PKG... — makes sure the named Debian packages are installed.
# As root it installs the missing ones with apt-get; otherwise it prints the
# exact command to run and fails. On a system without dpkg it says so and
# lets the build go on (the compiler will tell what is missing).
set -euo pipefail
if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps: no dpkg here; make sure these are installed: $*" >&2
    exit 0
fi
missing=()
for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
else
    echo "deps: missing Debian packages; run:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
