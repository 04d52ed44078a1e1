#!/usr/bin/env bash
# Builds every plugin component into target/wasm32-wasip2/plugin/*.wasm.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
plugins=(weir-condition weir-plugin-faulty weir-plugin-probe weir-plugin-istio weir-plugin-nginx weir-plugin-smi weir-plugin-prometheus weir-plugin-web weir-plugin-job weir-plugin-faulty-step weir-plugin-http-gate weir-plugin-compat weir-plugin-gatewayapi weir-plugin-graphite weir-plugin-datadog weir-plugin-newrelic weir-plugin-influxdb weir-plugin-cloudwatch)
args=()
for p in "${plugins[@]}"; do args+=(-p "$p"); done
# The faulty router's `fixed` build first, kept under its own name (the
# main build then puts the faulty one in place).
cargo build --profile plugin --target wasm32-wasip2 -p weir-plugin-faulty --features fixed
cp target/wasm32-wasip2/plugin/weir_plugin_faulty.wasm target/wasm32-wasip2/plugin/weir_plugin_faulty_fixed.wasm
# The plugins built against the frozen 0.2.0, likewise: the router, a step
# plugin and a metric provider (the main build makes the 0.1.0 router).
for variant in contract-0-2:v02 step-0-2:step_v02 provider-0-2:provider_v02; do
  cargo build --profile plugin --target wasm32-wasip2 -p weir-plugin-compat --features "${variant%%:*}"
  cp target/wasm32-wasip2/plugin/weir_plugin_compat.wasm "target/wasm32-wasip2/plugin/weir_plugin_compat_${variant#*:}.wasm"
done
cargo build --profile plugin --target wasm32-wasip2 "${args[@]}"
cp target/wasm32-wasip2/plugin/weir_plugin_compat.wasm target/wasm32-wasip2/plugin/weir_plugin_compat_v01.wasm
ls -l target/wasm32-wasip2/plugin/*.wasm
# The Python metric provider (componentize-py from PyPI, installed by scripts/setup-python.sh).
bash plugins/python-provider/build.sh
ls -l target/wasm32-wasip2/plugin/weir_plugin_python.wasm
