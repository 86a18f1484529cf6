# Two commands for a newcomer on a fresh Debian 12 machine: `make demo` and `make test`.
# Each does all of its own set-up (scripts/setup.sh is idempotent and fast the second time).
VENV := .venv
PY := $(VENV)/bin/python
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup demo test lint plugin clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) -m qgis_unravel.app.demo

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

plugin: setup
	@$(PY) scripts/build_plugin.py

clean:
	rm -rf dist build .pytest_cache .ruff_cache
