# The torch requirement is a variable so that a CPU-only machine can ask for a CPU build
# (e.g. `make test TORCH=torch==2.13.0`) while a GPU user gets the default CUDA build.
PYTHON ?= python3
TORCH ?= torch>=2.4
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-fast demo venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[test,gpu]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The edit loop: everything but the tests marked slow (end-to-end training, subprocesses).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(VENV)/bin/taan-core train --out runs/demo --overwrite
	TAAN_VIZ=$(VENV)/bin/taan-viz bash scripts/readme_figures.sh runs/demo/checkpoint.pt figures

bench: $(STAMP)
	$(PY) benchmarks/bench_layers.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
