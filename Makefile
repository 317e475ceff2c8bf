# Two entry points on a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU-only torch from the local wheel: an unpinned torch would download a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
# Tests run on 2 cores: one torch thread per worker keeps them from oversubscribing.
TEST_ENV := OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false

.PHONY: env demo test test-gpu bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m benchmarks.demo --out out/demo

test: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q

test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu

# Every tiny component on every backend of this machine (ratios to PyTorch eager; JSON/PNG in benchmarks/results).
bench: $(STAMP)
	for family in ldm vqgan imagen; do \
		$(BIN)/python -m benchmarks.compare_backends --family $$family --config tiny || exit 1; done

# Whole pipelines at real size (random weights) on a GPU: PyTorch eager fp32/fp16, torch.compile, ONNX Runtime
# CUDA and TensorRT (fp16 graphs) in one run per model; JSON/PNG in benchmarks/results. Imagen: the base 64x64
# stage only (--stages 1). Needs a Python whose torch has CUDA (.venv holds the CPU wheel):
#   make bench-gpu GPU_PYTHON=/path/to/python   (with genrt installed there: pip install -e '.[export,gpu,trt]')
GPU_PYTHON ?= $(BIN)/python
.PHONY: bench-gpu
bench-gpu:
	$(GPU_PYTHON) -m benchmarks.pipeline --device cuda --family ldm --config sd15 --resolution 512 --steps 50 --batch 1 --compile --engines
	$(GPU_PYTHON) -m benchmarks.pipeline --device cuda --family vqgan --config taming-f16-1024 --resolution 256 --engines
	$(GPU_PYTHON) -m benchmarks.pipeline --device cuda --family imagen --config imagen --stages 1 --compile --engines

clean:
	rm -rf $(VENV) out .pytest_cache
