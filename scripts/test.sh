#!/usr/bin/env bash
# The whole test suite: set-up, plugin build, then every test of the host and
# the end-to-end suite (release build: the same artifacts the demo uses).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-plugins.sh
# A real Prometheus for the Prometheus provider's tests.
bash scripts/setup-prometheus.sh
# A real browser (Chromium + ChromeDriver) for the dashboard's tests.
bash scripts/setup-chromium.sh
cargo test --release "$@"
# The plugins' own unit tests, natively (the condition component's parser,
# translation and parity table; the SDK; the routers' and providers' pure
# parts); the suites above run them through the sandbox.
cargo test --release -p weir-condition -p weir-plugin-sdk -p weir-plugin-gatewayapi -p weir-plugin-prometheus -p weir-plugin-web -p weir-plugin-influxdb -p weir-plugin-cloudwatch "$@"
# The controller suite again, on the simulated Kubernetes API server through
# kube-rs (as Weir's ServiceAccount under deploy/weir.yaml's RBAC).
WEIR_E2E_BACKEND=kubernetes cargo test --release -p weir-e2e --test controller --test bluegreen --test workload_ref --test standalone_experiments --test step_plugins --test contract_versions --test gatewayapi --test vendor_providers "$@"
# And once more with Argo Rollouts' own CRDs installed instead of Weir's
# (no status subresource on AnalysisRuns and Experiments, required fields,
# status pruned to Argo's schema): either controller runs on either's CRDs.
WEIR_E2E_BACKEND=kubernetes-argo-crds cargo test --release -p weir-e2e --test controller --test bluegreen --test workload_ref --test standalone_experiments --test step_plugins --test contract_versions --test gatewayapi --test vendor_providers "$@"
