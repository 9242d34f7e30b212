# The README's two commands: `make demo` and `make test`. Each creates the
# virtual environment on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint check bench clean browser-assets protos

# torch is pinned to the CPU build first (this machine's pip takes it from
# local disk in seconds); the bench extra's range then accepts it instead of
# pulling a multi-GB CUDA build.
TORCH ?= torch==2.13.0

# Each step says what it installs and lets pip show its own progress (no
# --quiet): a fresh machine spends minutes here, and silence looks like a hang.
$(STAMP): pyproject.toml
	@echo "testfleet: setting up $(VENV) (first run only; a few minutes on a fresh machine)"
	@echo "[1/4] creating the virtual environment $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "[2/4] upgrading pip"
	$(BIN)/python -m pip install --upgrade pip
	@echo "[3/4] installing $(TORCH), the CPU build, for model benchmarks (the biggest step)"
	$(BIN)/python -m pip install '$(TORCH)'
	@echo "[4/4] installing testfleet with its dependencies and the dev and bench extras"
	$(BIN)/python -m pip install -e '.[dev,bench]'
	touch $(STAMP)
	@echo "testfleet: $(VENV) is ready"

# The dashboard's browser tests (tests/integration/test_it_dashboard.py) drive
# the system's chromium through Playwright, never a browser Playwright
# downloads. Installed once from the distribution (Debian's package, as root or
# through sudo); a machine that has it skips this.
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	@echo "installing chromium for the dashboard's browser tests (apt-get)"
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	else echo "chromium is missing: install Debian's chromium package as root" >&2; exit 1; fi; \
	$$SUDO apt-get update && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

# The chaos suite (tests/chaos) partitions workers in network namespaces with
# veth pairs, made by `ip` (Debian's iproute2); it runs as root in CI.
IPROUTE ?= /usr/sbin/ip
$(IPROUTE):
	@echo "installing iproute2 for the chaos suite's network namespaces (apt-get)"
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	else echo "ip is missing: install Debian's iproute2 package as root" >&2; exit 1; fi; \
	$$SUDO apt-get update && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2

# The PostgreSQL store's tests (tests/pg_cluster.py) start a private cluster
# with the server's binaries (initdb, pg_ctl); Debian's postgresql package.
PG_CTL ?= $(firstword $(wildcard /usr/lib/postgresql/*/bin/pg_ctl) /usr/lib/postgresql/15/bin/pg_ctl)
$(PG_CTL):
	@echo "installing postgresql for the PostgreSQL store's tests (apt-get)"
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	else echo "PostgreSQL is missing: install Debian's postgresql package as root" >&2; exit 1; fi; \
	$$SUDO apt-get update && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql

# The browser benchmark backend's JavaScript: onnxruntime-web, pinned in
# browser/package-lock.json, installed by npm (node and npm come with the
# machine); the worker serves these files itself on 127.0.0.1 at run time.
BROWSER_ASSETS := browser/node_modules/.package-lock.json
$(BROWSER_ASSETS): browser/package.json browser/package-lock.json
	@echo "installing onnxruntime-web for browser benchmarks (npm ci in browser/)"
	cd browser && npm ci --no-audit --no-fund
	touch $(BROWSER_ASSETS)

browser-assets: $(BROWSER_ASSETS)

demo: $(STAMP) $(BROWSER_ASSETS)
	$(BIN)/testfleet demo

# TESTFLEET_REQUIRE_TOOLS=1: a test skipped for a missing tool (torch, xdist, git,
# make) fails the run, so a lost install step cannot hide tests (tests/conftest.py).
test: $(STAMP) $(CHROMIUM) $(IPROUTE) $(PG_CTL) $(BROWSER_ASSETS)
	HF_HUB_OFFLINE=1 TESTFLEET_REQUIRE_TOOLS=1 $(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --config-file tests/mypy.ini tests benchmarks scripts --exclude 'tests/unit/worker/conftest\.py$$'
	@# Two conftest.py files would both be the module "conftest" in one run.
	$(BIN)/mypy --config-file tests/mypy.ini tests/unit/worker/conftest.py

check: lint test

# The worker channel's Python code from its .proto (src/testfleet/protocol/proto/),
# with the pinned grpcio-tools of the dev extra. Run after editing the .proto and
# commit the result: tests/unit/protocol/test_protocol_proto_generated.py fails
# while the checked-in files differ from what this writes.
protos: $(STAMP)
	$(BIN)/python scripts/generate_protos.py

bench: $(STAMP)
	$(BIN)/python benchmarks/dispatch.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
