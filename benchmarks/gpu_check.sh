#!/usr/bin/env bash
# gpu_check.sh -- what `make gpu-check` runs: genrt's own check of a machine with an NVIDIA GPU.
#
# From the repository root, with GPU_PYTHON = a Python whose torch has CUDA and OUT = a folder for the results:
#   make gpu-check GPU_PYTHON=/path/to/python OUT=/tmp/out
# (../shared/gpu/run.sh, a copy of which may sit in the git-ignored .gpu/, installs carried wheels and then calls
# exactly that.) About 8 minutes (GPUCHECK_BUDGET_S, default 480). Writes to $OUT:
#   gpu.txt                 nvidia-smi: name, compute capability, driver, memory
#   doctor.json, doctor.txt `genrt doctor`: date, GPU, driver and CUDA versions, libraries and their versions, what
#                           runs here, self-test parity and latency per backend
#   pytest_gpu.xml, .txt    the GPU tests (tests/gpu; they fail, not skip, when no GPU backend is installed)
#   pipeline-ldm-sd15-cuda.json/.png  SD 1.5 512x512 fp16, batch 1, GPUCHECK_STEPS (default 20) steps: PyTorch
#                           eager fp32/fp16, torch.compile (GPUCHECK_COMPILE=0 skips it), ONNX Runtime CUDA without
#                           and with CUDA graphs, on the plain and the fused graphs (GPUCHECK_FUSIONS=0 skips the
#                           fused ones), and, where a TensorRT flavour serves this GPU, TensorRT; each runtime row
#                           records what its runners opened, their CUDA graphs and the clock (CUDA events on TensorRT)
# Exit status: 0 when doctor, the GPU tests and the benchmark all succeeded, else 1.
set -u
PY=${GPU_PYTHON:-python3}
OUT=${OUT:-benchmarks/results/gpu-check}
BUDGET=${GPUCHECK_BUDGET_S:-480}
STEPS=${GPUCHECK_STEPS:-20}
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
stamp() { echo "=== [$(( $(date +%s) - START )) s] $*"; }
[ -f pyproject.toml ] && [ -d runtime ] || { echo "run from the genrt repository root"; exit 2; }
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
failed=0

stamp "machine"
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/gpu.txt"
if ! $PY -c "import genrt.export, genrt.runtime" 2>/dev/null; then
  # genrt not installed in GPU_PYTHON (a read-only image): import it from the working tree, mapped as pyproject does
  RUN=$(mktemp -d); mkdir -p "$RUN/genrt"
  for f in "$PWD"/genrt/*.py; do ln -sf "$f" "$RUN/genrt/"; done
  for d in sdk export runtime serve; do [ -d "$d" ] && ln -sfn "$PWD/$d" "$RUN/genrt/$d"; done
  export PYTHONPATH="$RUN:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
$PY -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
        torch.cuda.is_available())" || { echo "GPU_PYTHON=$PY cannot import torch"; exit 2; }

stamp "1. genrt doctor"
timeout $(( $(left) > 240 ? 240 : $(left) )) $PY -m genrt.cli doctor --json-out "$OUT/doctor.json" \
    | tee "$OUT/doctor.txt"
[ "${PIPESTATUS[0]}" = 0 ] || failed=1

stamp "2. GPU tests"
timeout $(( $(left) > 200 ? 200 : $(left) )) $PY -m pytest -q -m gpu tests/gpu -p no:cacheprovider -o addopts="" -rA \
    --junitxml="$OUT/pytest_gpu.xml" > "$OUT/pytest_gpu.txt" 2>&1 || failed=1
tail -n 30 "$OUT/pytest_gpu.txt"

stamp "3. SD 1.5 512x512 fp16, $STEPS steps, batch 1"
# TensorRT only where a flavour builds for and runs on this GPU (one line on stderr says why not)
read -r -a EXTRA <<< "$($PY -m benchmarks.gpu_flags)"
[ "${GPUCHECK_COMPILE:-1}" = 1 ] && EXTRA+=(--compile)
[ "${GPUCHECK_FUSIONS:-1}" = 1 ] && EXTRA+=(--fusions)
T=$(( $(left) - 10 ))
if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "skipped: the torch of GPU_PYTHON=$PY sees no CUDA GPU"; failed=1
elif [ $T -gt 60 ]; then
  timeout $T $PY -m benchmarks.pipeline --device cuda --family ldm --config sd15 --resolution 512 --steps "$STEPS" \
      --batch 1 --warmup 1 --repeats 3 --out "$OUT" "${EXTRA[@]}" 2>&1 | tail -n 40
  [ "${PIPESTATUS[0]}" = 0 ] || failed=1
else
  echo "skipped: $T s left"; failed=1
fi
ls -la "$OUT"
stamp "done (failed=$failed)"
exit $failed
