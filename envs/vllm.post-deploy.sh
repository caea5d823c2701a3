#!/usr/bin/env bash
# Runs inside the new environment from the workflow's working directory (the repository root).
set -euo pipefail
python -m pip install --no-deps -e .
