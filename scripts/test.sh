#!/usr/bin/env bash
# Run the whole test suite (unit, golden, privileged kernel and lab tests). Installs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
