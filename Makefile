# The README's two commands:  make demo  and  make test.
# Both create .venv and install everything on first use (PyTorch's CPU build first, so no
# other package pulls in the multi-GB CUDA one), then reinstall only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: demo test test-automem-real setup lint clean

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The conformance suite against the real AutoMem; not part of `make test` (docs/drivers/automem.md).
AUTOMEM_SRC    ?= /work/automem-src
AUTOMEM_PYTHON ?= /work/automem-env/bin/python
test-automem-real: $(STAMP)
	MEMORY_DRIVERS_AUTOMEM_REAL=1 AUTOMEM_SRC=$(AUTOMEM_SRC) AUTOMEM_PYTHON=$(AUTOMEM_PYTHON) \
		$(PY) -m pytest tests/automem_real $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[all,dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check memory_drivers tests examples migrate.py
	$(VENV)/bin/mypy memory_drivers

clean:
	rm -rf $(VENV) storage .pytest_cache
