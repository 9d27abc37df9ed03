#!/usr/bin/env bash
# Start the local MLflow + Prefect servers on loopback (see README.md here).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/alignflow up "$@"
