# Quick start: `make demo` runs the product on the embedded default; `make test` runs the tests.
# Both create .venv when it is missing and reuse it when it is there; `make test` first
# installs and starts what the tests need (`make setup`, quick when all is there).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Every package of the environment, pinned with sha256 hashes (`make lock` refreshes it).
LOCK := requirements.lock
# Folder holding the CPU build of torch (torch==2.13.0+cpu); see docs/deployment.md.
TORCH_WHEELS ?= /opt/wheels
# Where pip finds that build when the folder lacks it (the hashes of the lock still apply).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_SOURCE := $(if $(wildcard $(TORCH_WHEELS)/torch-2.13.0+cpu-*.whl),,--extra-index-url $(TORCH_INDEX))
LOCK_ARGS := pyproject.toml requirements-build.in --extra dev --extra scale \
	--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--find-links $(TORCH_WHEELS) --emit-find-links --override requirements-override.txt \
	--no-header -o $(LOCK)

.PHONY: venv setup demo test test-fast lint typecheck audit lock lock-upgrade clean

venv: $(STAMP)

# Installs exactly the lock file (pip refuses any file whose hash is not in it), then the
# project itself without resolving anything more.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK) $(TORCH_SOURCE)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

# Refresh requirements.lock after a change of pyproject.toml (keeps the other pins).
lock: $(STAMP)
	$(VENV)/bin/uv pip compile $(LOCK_ARGS)

# Move every pin to the newest release the ranges of pyproject.toml allow.
lock-upgrade: $(STAMP)
	$(VENV)/bin/uv pip compile --upgrade $(LOCK_ARGS)

# Known vulnerabilities of the locked packages (tools/audit.py; skipped loudly offline).
audit: $(STAMP)
	$(PY) tools/audit.py $(LOCK)

demo: setup
	$(PY) -m cds.demo

# What the tests need (.ci/setup): Debian packages (.ci/apt-packages.txt), the venv,
# PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (installed and started when
# absent), the test FHIR engine's npm packages and the healthchain client (.ci/setup.d).
setup:
	bash .ci/setup packages
	@$(MAKE) --no-print-directory venv
	bash .ci/setup services

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow and not browser"

lint: $(STAMP)
	$(VENV)/bin/ruff check cds connectors model migrations tests benchmarks tools
	$(VENV)/bin/ruff format --check cds connectors model tests benchmarks tools

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
