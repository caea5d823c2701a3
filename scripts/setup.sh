#!/usr/bin/env bash
# Set-up: a virtual environment .venv with ctxenergy (editable), the transformers engines, Snakemake, the test tools
# and the notebook's kernel.
# On a GPU host pip brings a CUDA build of torch; on a CPU host the CPU build is enough for the smoke run and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned, so that transformers does not pull another build in.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e '.[hf,workflow,test,notebook]'
echo "ready: . .venv/bin/activate"
