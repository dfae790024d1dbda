# The two commands (see README): `make demo` runs the main job, `make test` runs the tests.
# Each creates the local virtualenv .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME := $(VENV)/.runtime-installed
TESTENV := $(VENV)/.test-installed
OUT ?= runs

.PHONY: demo grokking test test-full test-parity bench venv clean chromium

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUNTIME): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $@

# torch==2.13.0 is the local CPU build; the test extra pins it exactly.
$(TESTENV): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test]'
	touch $@ $(RUNTIME)

venv: $(RUNTIME)

DEMO_ARGS ?=
# The main job: the induction circuit study (about 3 minutes on 2 cores, no download).
demo: $(RUNTIME)
	$(PY) -m jinterp.experiments.circuits --out $(OUT)/circuits $(DEMO_ARGS)

# The grokking reproduction (about 16 minutes on 2 cores), one command of its own.
grokking: $(RUNTIME)
	$(PY) -m jinterp.experiments.grokking --out $(OUT)/grokking $(GROKKING_ARGS)

# The HTML pages' tests render in headless Chromium: Debian's package, installed when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the HTML page tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null; }

# `make test` deselects the tests marked `full` (larger variants of tests it keeps in small
# form); `make test-full` runs everything (about 20 minutes on 2 cores).
PYTEST_MARK ?= not full
test: $(TESTENV) chromium
	$(VENV)/bin/ruff check .
	@$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 -m "$(PYTEST_MARK)" tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is missing" >&2; exit 1; fi; \
	exit $$rc

test-full:
	$(MAKE) test PYTEST_MARK="full or not full"

# Parity with TransformerLens and SAELens on the same weights, in a virtualenv of its own
# (.venv-parity): the tests that need them are skipped by `make test`, which does not install them.
PARITY_VENV := .venv-parity
PARITY_TESTS := tests/patching/test_tl_patching_parity.py tests/reading/test_tl_parity.py \
	tests/sae/test_saelens_parity.py
$(PARITY_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PARITY_VENV)
	$(PARITY_VENV)/bin/pip install -q -e '.[test,parity]'
	touch $@
test-parity: $(PARITY_VENV)/.installed
	SAELENS_PYTHON=$(PARITY_VENV)/bin/python $(PARITY_VENV)/bin/python -m pytest -q -rs \
	$(PARITY_TESTS)

# Speed benchmarks, each printing one JSON object. The full-size SAE ground-truth run
# (benchmarks/bench_sae_ground_truth.py) takes about an hour on 2 cores and is run by hand.
BENCHES := bench_core bench_compile bench_llama_depth bench_patching bench_probes bench_grokking \
	bench_topk_decode bench_sae
BENCHENV := $(VENV)/.bench-installed
$(BENCHENV): pyproject.toml | $(TESTENV)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

bench: $(BENCHENV)
	for b in $(BENCHES); do echo "== $$b"; $(PY) benchmarks/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) $(PARITY_VENV) $(OUT) .pytest_cache
