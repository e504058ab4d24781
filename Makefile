# The README's two commands:  make demo  and  make test.
# Both create .venv and install everything on first use (PyTorch's CPU build first, so no
# other package pulls in the multi-GB CUDA one), then reinstall only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: demo test setup lint clean

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

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
