#!/usr/bin/env bash
# Installs meshscope (scripts/setup.sh) and runs the embedded all-in-one stack with demo traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/meshscope up --traffic "$@"
