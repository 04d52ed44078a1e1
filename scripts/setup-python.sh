#!/usr/bin/env bash
# Installs componentize-py (from PyPI) into a virtualenv under target/, for
# building the Python metric-provider plugin. Fails loudly if it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/pyenv
if [ ! -x "$venv/bin/componentize-py" ]; then
    command -v python3 >/dev/null || { echo "setup-python: python3 is missing" >&2; exit 1; }
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check componentize-py==0.25.1
fi
"$venv/bin/componentize-py" --version
