# Two entry points on a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU-only torch from the local wheel: an unpinned torch would download a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
# Tests run on 2 cores: one torch thread per worker keeps them from oversubscribing.
# ONNX Runtime's OpenVINO execution provider lives in an environment of its own (onnxruntime-openvino installs the
# same onnxruntime module as the CPU build): genrt's torch-free runtime only. Tests reach it as GENRT_OPENVINO_PYTHON.
OV_VENV := .venv-openvino
OV_STAMP := $(OV_VENV)/.installed
TEST_ENV := OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false \
	GENRT_OPENVINO_PYTHON=$(CURDIR)/$(OV_VENV)/bin/python

# GPU targets (test-gpu, bench-gpu, gpu-check) run GPU_PYTHON: a Python whose torch has CUDA, with genrt installed
# there (pip install -e '.[export,gpu]', plus '.[trt]' or '.[trt-rtx]'). There is no default: .venv holds the CPU
# torch wheel, on which every GPU test would skip and the targets would look green.
GPU_PYTHON ?=
OUT ?= benchmarks/results/gpu-check

.PHONY: env openvino-env demo test test-gpu bench bench-gpu gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

env: $(STAMP)

$(OV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(OV_VENV)
	$(OV_VENV)/bin/python -m pip install -q -e ".[openvino]"
	touch $(OV_STAMP)

openvino-env: $(OV_STAMP)

demo: $(STAMP)
	$(BIN)/python -m benchmarks.demo --out out/demo

# The web page test drives Debian's chromium + chromedriver: installed when missing and apt-get is usable as root;
# otherwise that test skips with the reason.
.PHONY: browser-deps
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver) \
			|| echo "make: apt-get could not install chromium/chromedriver: the web page test will skip"; \
	else echo "make: chromium/chromedriver missing and apt-get unusable: the web page test will skip"; fi

test: $(STAMP) $(OV_STAMP) browser-deps
	$(TEST_ENV) $(BIN)/python -m pytest -q

.PHONY: gpu-python
gpu-python:
	@[ -n "$(GPU_PYTHON)" ] || { echo "make: set GPU_PYTHON=/path/to/python, a Python whose torch has CUDA and \
	genrt installed (.venv is the CPU build)" >&2; exit 2; }

# The GPU tests fail (not skip) on a GPU machine without any GPU backend installed.
test-gpu: gpu-python
	$(GPU_PYTHON) -m pytest -q -m gpu tests/gpu

# Ray Serve / Ray Data tests (a local Ray instance in a network namespace of the test's own; over 60 s, so not in `make test`).
.PHONY: test-ray
test-ray: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q -m ray

# Every tiny component on every backend of this machine (ratios to PyTorch eager; JSON/PNG in benchmarks/results).
bench: $(STAMP)
	for family in ldm vqgan imagen; do \
		$(BIN)/python -m benchmarks.compare_backends --family $$family --config tiny || exit 1; done

# Whole pipelines at real size (random weights) on a GPU: PyTorch eager fp32/fp16, torch.compile and the GPU backends
# installed in GPU_PYTHON (fp16 graphs): ONNX Runtime CUDA, and TensorRT only where a flavour serves this GPU
# (benchmarks.gpu_flags); with no GPU backend at all each run stops before any timing. One run per model; JSON/PNG
# in benchmarks/results. Imagen: the base 64x64 stage only (--stages 1).   make bench-gpu GPU_PYTHON=/path/to/python
bench-gpu: gpu-python
	flags=$$($(GPU_PYTHON) -m benchmarks.gpu_flags) || exit 2; \
	$(GPU_PYTHON) -m benchmarks.pipeline --device cuda --family ldm --config sd15 --resolution 512 --steps 50 --batch 1 --compile $$flags \
	&& $(GPU_PYTHON) -m benchmarks.pipeline --device cuda --family vqgan --config taming-f16-1024 --resolution 256 $$flags \
	&& $(GPU_PYTHON) -m benchmarks.pipeline --device cuda --family imagen --config imagen --stages 1 --compile $$flags

# genrt's check of a GPU machine (about 8 minutes): genrt doctor, the GPU tests and a short SD 1.5 512x512 fp16
# latency comparison, results under $(OUT) (benchmarks/gpu_check.sh says what each file holds).
#   make gpu-check GPU_PYTHON=/path/to/python OUT=/tmp/out
gpu-check: gpu-python
	GPU_PYTHON=$(GPU_PYTHON) OUT=$(OUT) bash benchmarks/gpu_check.sh

# The demo models genrt trains itself (issue 15): each family's recipe from scratch into out/train-demo (a killed run
# resumes from its checkpoints), then the trained files copied over the shipped ones in models/ (their README.md
# stays). One torch thread per recipe; `make -j2 train-demo` runs ldm and vqgan side by side and imagen after ldm
# (imagen's order-only wait for ldm applies to train-demo only). Measured, the three recipes run as -j2 runs them
# (2026-12-04, an AMX host, other jobs late in the run): ldm 11 min, vqgan 50 min, imagen 50 min: 61 min in all
# (ldm ~32 min on a loaded host). imagen came out byte-identical to models/imagen-shapes, ldm equal in adherence.
.PHONY: train-demo train-ldm train-vqgan train-imagen
train-demo: train-ldm train-vqgan train-imagen

train-ldm: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m genrt.sdk.train.recipes.ldm_shapes --out out/train-demo/ldm-shapes
	mkdir -p models/ldm-shapes && cp -r out/train-demo/ldm-shapes/pipeline/. models/ldm-shapes/

train-vqgan: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m genrt.sdk.train.recipes.vqgan_shapes --out out/train-demo/vqgan-shapes
	mkdir -p models/vqgan-shapes && cp out/train-demo/vqgan-shapes/model/last.ckpt models/vqgan-shapes/

train-imagen: $(STAMP) | $(if $(filter train-demo,$(MAKECMDGOALS)),train-ldm)
	OMP_NUM_THREADS=1 $(BIN)/python -m genrt.sdk.train.recipes.imagen_shapes --out out/train-demo/imagen-shapes
	rm -rf models/imagen-shapes/stage_I models/imagen-shapes/stage_II && mkdir -p models/imagen-shapes
	cp -r out/train-demo/imagen-shapes/stage_I out/train-demo/imagen-shapes/stage_II models/imagen-shapes/

clean:
	rm -rf $(VENV) $(OV_VENV) out .pytest_cache
