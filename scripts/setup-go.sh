#!/usr/bin/env bash
# Installs Debian's Go toolchain (golang-go) for the benchmark's baseline: a
# go-plugin-style child process serving net/rpc with gob, as Argo Rollouts'
# plugins do. Only the benchmarks need it.
set -euo pipefail
if command -v go >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-go: go is missing and installing it needs root (apt-get install golang-go)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends golang-go >/dev/null
command -v go >/dev/null || { echo "setup-go: go still missing after install" >&2; exit 1; }
