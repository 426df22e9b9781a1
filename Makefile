# The two commands a user needs: `make run` (the product on one machine) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Re-install only when the dependency list changes.
STAMP := $(VENV)/.deps-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test install bench clean-cache system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[export,test,bench]'
	rm -f $(VENV)/.deps-* && touch $(STAMP)

install: $(STAMP)

# Debian packages the tests use: Chromium for the browser test (a system browser, no download).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: sudo apt-get install chromium"; fi; }

test: install system-deps
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

run: install
	$(BIN)/python -m imagesearch.run

bench: install
	$(BIN)/python -m bench.all
