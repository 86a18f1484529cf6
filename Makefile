# Two commands for a newcomer on a fresh Debian 12 machine: `make demo` and `make test`.
# Each does all of its own set-up (scripts/setup.sh is idempotent and fast the second time).
VENV := .venv
PY := $(VENV)/bin/python
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup demo test lint plugin clean golden reference-env

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

# Golden data: run by hand, never by CI (`test` does not depend on these targets). Builds the
# upstream reference environment outside the checkout when it is missing (reference/README.md),
# then regenerates the golden data. REFERENCE_ENV: where the environment lives; GOLDEN_OUT:
# the folder to write (a scratch folder to compare with the committed data, see docs/golden.md).
REFERENCE_ENV ?= $(HOME)/.cache/qgis-unravel/reference-env
GOLDEN_OUT ?= tests/golden
export REFERENCE_ENV

reference-env:
	@bash reference/build_env.sh

golden: reference-env
	$(REFERENCE_ENV)/venv/bin/python reference/generate.py --out $(GOLDEN_OUT)

clean:
	rm -rf dist build .pytest_cache .ruff_cache
