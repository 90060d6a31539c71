# EBFlow book and ebflow_lite: one-command entry points. Run `make help`.
#
#   make venv          .venv with the CPU build of PyTorch, ebflow_lite[test,book], npm assets
#   make test          library tests + every notebook (chapters/, exercises/) in fast mode
#   make book          the book (HTML _build/html, PDF exports/ebflow-book.pdf), full mode
#   make book FAST=1   the same in fast mode (EBFLOW_FAST=1), as CI does
#   make browser-test  checks the built HTML in headless Chromium and the PDF with poppler
#                      (installs both if missing); screenshots in _build/screenshots,
#                      PDF chapter pages in _build/pdf-pages
#   make lint          ruff
#   make clean         removes build outputs; `make distclean` also .venv and node_modules

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
# Pinned, and installed before everything else: the pin resolves to a CPU wheel where a
# wheel index/find-links provides one; an unpinned torch from PyPI is a multi-GB CUDA build.
# Elsewhere use e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
VENV_STAMP := $(VENV)/.ebflow-venv-stamp
# npm packages of the offline site (package.json): KaTeX's CSS and fonts, minisearch
NPM_STAMP := node_modules/.ebflow-npm-stamp

# FAST=1 (or EBFLOW_FAST=1 in the environment) selects fast mode for `make book`.
ifeq ($(FAST),1)
BOOK_ENV := EBFLOW_FAST=1
else ifeq ($(FAST),0)
BOOK_ENV := EBFLOW_FAST=
else
BOOK_ENV :=
endif

.PHONY: help venv test book browser-test lint clean distclean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

venv: $(VENV_STAMP) $(NPM_STAMP) fashion-mnist

$(VENV_STAMP): pyproject.toml
	@if [[ ! -x "$(PY)" ]]; then echo "make venv: creating $(VENV)"; python3 -m venv "$(VENV)"; fi
	"$(PY)" -m pip install $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	"$(PY)" -m pip install -e ".[test,book]"
	@# jupyter_server refuses to run as root (containers, CI) unless allowed
	mkdir -p "$(VENV)/etc/jupyter"
	echo '{"ServerApp": {"allow_root": true}}' > "$(VENV)/etc/jupyter/jupyter_server_config.json"
	touch "$@"

# Debian's Fashion-MNIST (ebflow_lite.data.fashion_mnist), installed when missing and running
# as root, like chromium for browser-test; elsewhere its test skips.
FASHION_MNIST_FILE ?= /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
.PHONY: fashion-mnist
fashion-mnist:
	@if [[ ! -f "$(FASHION_MNIST_FILE)" ]]; then \
	  if [[ $$(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make venv: installing Debian's dataset-fashion-mnist"; \
	    apt-get update && apt-get install -y dataset-fashion-mnist; \
	  else \
	    echo "make venv: no Fashion-MNIST; as root: apt-get install dataset-fashion-mnist"; \
	  fi; \
	fi

$(NPM_STAMP): package.json package-lock.json
	npm install --no-audit --no-fund
	touch "$@"

test: venv
	@rc=0; EBFLOW_FAST=1 "$(VENV)/bin/pytest" -m "not browser" || rc=$$?; \
	if [[ $$rc -eq 5 ]]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

book: venv
	$(BOOK_ENV) VENV="$(abspath $(VENV))" scripts/build_book.sh

browser-test: venv
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v pdftoppm >/dev/null 2>&1 || missing="$$missing poppler-utils"; \
	if [[ -n "$$missing" ]]; then \
	  echo "make browser-test: installing Debian's$$missing"; \
	  apt-get update && apt-get install -y $$missing; \
	fi
	@rc=0; "$(VENV)/bin/pytest" -m browser tests/test_book_browser.py tests/test_book_pdf.py \
	  || rc=$$?; \
	if [[ $$rc -eq 5 ]]; then echo "make browser-test: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

lint: venv
	"$(VENV)/bin/ruff" check ebflow_lite tests exercises/solutions theme scripts

clean:
	rm -rf _build exports .pytest_cache

distclean: clean
	rm -rf "$(VENV)" node_modules
