#!/usr/bin/env bash
# Installs Debian's prometheus package (for the Prometheus provider's tests).
# The tests start their own server on loopback; the package's service is
# never started. Fails loudly when it cannot be installed.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-prometheus: prometheus is missing and installing it needs root (apt-get install prometheus)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v prometheus >/dev/null || { echo "setup-prometheus: prometheus still missing after install" >&2; exit 1; }
