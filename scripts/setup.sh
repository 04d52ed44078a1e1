#!/usr/bin/env bash
# One-time machine set-up for building and testing Weir. Safe to re-run.
set -euo pipefail
command -v cargo >/dev/null || { echo "setup: cargo is missing; install Rust with rustup" >&2; exit 1; }
# Plugins are built for wasm32-wasip2, which emits components directly.
# RUSTUP_AUTO_INSTALL may be off, so add the target explicitly.
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
