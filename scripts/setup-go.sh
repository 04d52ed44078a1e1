#!/usr/bin/env bash
# Debian's Go toolchain, for the benchmark's baseline: a go-plugin-style
# child process serving net/rpc with gob, as Argo Rollouts' plugins do.
exec bash "$(dirname "$0")/apt-install.sh" go golang-go "the benchmark's Go baseline needs it"
