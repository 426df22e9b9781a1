# The two commands a user needs: `make run` (the product on one machine) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTRITON_VERSION := 0.7.0
# Re-install only when the dependency list changes.
STAMP := $(VENV)/.deps-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

.PHONY: run test test-quick compose-test lint install bench clean-cache system-deps docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

$(STAMP): $(BIN)/python pyproject.toml Makefile
	$(BIN)/pip install -q -e '.[export,test,bench,docs,ray]'
	# Tests use only the tritonserver binary inside this wheel; its Python package pins numpy<2,
	# which the rest of the stack does not need, so it is installed without its dependencies.
	$(BIN)/pip install -q --no-deps 'nvidia-pytriton==$(PYTRITON_VERSION)'
	rm -f $(VENV)/.deps-* && touch $(STAMP)

install: $(STAMP)

# Debian packages the tests use: Chromium for the browser test (a system browser, no download),
# Maven to fetch Elasticsearch's test distribution, openssl for the TLS test node, qemu-user to run
# the int8 tests on an emulated AVX2-only CPU.
SYSTEM_PACKAGES := chromium:chromium mvn:maven openssl:openssl qemu-x86_64:qemu-user
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing system packages:$$missing (sudo apt-get install$$missing)"; exit 1; fi; fi

# ruff on everything, mypy on the product code: pyproject.toml configures both. mypy reads the product
# as it is installed (api/ is imagesearch.api, ...; setup.py), through a tree of links in build/typecheck.
TYPECHECK := build/typecheck
lint: install
	$(BIN)/ruff check .
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/imagesearch
	ln -s $(CURDIR)/imagesearch/* $(TYPECHECK)/imagesearch/
	for service in export ingest api ui; do ln -s $(CURDIR)/$$service $(TYPECHECK)/imagesearch/$$service; done
	cd $(TYPECHECK) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p imagesearch

# --durations: where the suite's time goes, printed at the end of every run.
test: install system-deps lint
	$(BIN)/python -m pytest -ra --durations=25 $(PYTEST_ARGS)

# The tests that start no server process and need no real-size or second model (the cached test model
# is trained once), on every core: each test makes its own folders and ports.
test-quick: install
	$(BIN)/python -m pytest -q -n auto -m "not server and not slow" --durations=10 $(PYTEST_ARGS)

# The stack under a real Docker engine, as a user runs it (also part of `make test`).
compose-test: install
	$(BIN)/python -m pytest -ra -s tests/test_compose_docker.py $(PYTEST_ARGS)

run: install
	$(BIN)/python -m imagesearch.run

# `make bench ONLY="bench_es bench_blip2"` runs only those.
bench: install
	$(BIN)/python -m bench.all $(ONLY)

# The documentation site: the generated pages (configuration, command line, REST API, benchmarks and
# their plots from bench/results/), then a strict build into site/ (a broken link or page fails it).
docs: install
	$(BIN)/python docs/generate.py
	$(BIN)/python -m mkdocs build --strict
