#!/usr/bin/env bash
# Usage: apt-install.sh COMMAND PACKAGE WHY
# Installs Debian's PACKAGE unless COMMAND is already on PATH; fails loudly
# when it cannot. Services a package ships are never started by it.
set -euo pipefail
command_name=$1 package=$2 why=$3
if command -v "$command_name" >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "$command_name is missing ($why) and installing it needs root: apt-get install $package" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$package" >/dev/null
command -v "$command_name" >/dev/null || { echo "$command_name still missing after installing $package" >&2; exit 1; }
