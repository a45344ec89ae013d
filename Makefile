# Two commands for a fresh machine (each sets up .venv by itself, idempotently, from requirements.lock):
#   make demo          render the demo film into reel-out/demo/
#   make test          lint with ruff, then run the test suite (offline, CPU)
# And for maintainers:
#   make lock          re-resolve requirements.lock from pyproject.toml (uv, hashed)
#   make test-latest   the suite against the newest versions pyproject.toml allows, in .venv-latest
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := -m pip install -q --disable-pip-version-check
# torch is installed by this pin, not from the lock: the CPU build of torch 2.13.0 lies on this project's
# machines, and on a CUDA workstation the same pin installs PyPI's CUDA build. `make TORCH=torch==X demo`
# chooses another build. Everything else comes from requirements.lock, hash-checked.
TORCH ?= torch==2.13.0
LOCK := requirements.lock
# The lock is resolved for the project's machines (CPython 3.11, Linux x86_64). spandrel's torchvision is
# left out (reel does not use it; PyPI's builds pin a torch release and replace the CPU build).
LOCK_PYTHON := 3.11
LOCK_FLAGS := --extra dev --extra upscale --python-version $(LOCK_PYTHON) --python-platform x86_64-manylinux_2_28 \
	--generate-hashes --no-emit-package torch
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile $(LOCK) | sha256sum | cut -c1-16)
LATEST := .venv-latest

.PHONY: demo test lint setup lock test-latest clean-venv browser

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/reel demo

test: $(STAMP) browser lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# ruff with the settings in pyproject.toml (line length 120); `make test` runs it first
lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The web-page tests drive Debian's chromium (through Playwright, which never downloads a browser here) and
# Debian's firefox-esr (over WebDriver BiDi: tests/engine/firefox_page.py).
browser:
	@{ command -v chromium && command -v firefox-esr; } >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ] && \
		command -v apt-get >/dev/null; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium firefox-esr >/dev/null; \
		else echo "chromium or firefox-esr is missing and cannot be installed here: its browser tests will be skipped"; fi; }

setup: $(STAMP)

# 1. torch by its pin (a CUDA build brings its own libraries)  2. the locked packages, hash-checked, no
# resolver: torch's other dependencies end at their locked versions  3. reel itself, editable, built with the
# locked setuptools  4. pip check: the set is consistent (but for spandrel's torchvision, left out on purpose)
$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == tuple(map(int, "$(LOCK_PYTHON)".split("."))) else \
		f"$(LOCK) is resolved for CPython $(LOCK_PYTHON); $(VENV) has {v[0]}.{v[1]}: use PYTHON=python$(LOCK_PYTHON) " \
		"(then make clean-venv), or re-resolve the lock for your Python with make lock LOCK_PYTHON={v[0]}.{v[1]}")'
	$(PY) $(PIP) "$(TORCH)"
	$(PY) $(PIP) --require-hashes --no-deps -r $(LOCK)
	$(PY) $(PIP) --no-deps --no-build-isolation -e .
	@$(PY) -m pip check > $(VENV)/pip-check.txt || grep -v "^spandrel .* requires torchvision, which is not installed" \
		$(VENV)/pip-check.txt | { ! grep .; } || { echo "pip check: the installed set is inconsistent"; exit 1; }
	@rm -f $(VENV)/.installed-*
	@touch $@

# Re-resolve the lock: the newest versions pyproject.toml allows today, for CPython $(LOCK_PYTHON) on Linux x86_64.
# /opt/wheels (this project's machines) offers the CPU torch build, so its dependencies are the ones locked.
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) $(PIP) "uv==$(UV_VERSION)"
	@printf 'torchvision\n' > $(VENV)/lock-excludes.txt
	@printf '%s\n' "$(TORCH)" > $(VENV)/lock-constraints.txt
	$(VENV)/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) $$(test -d /opt/wheels && echo --find-links /opt/wheels) \
		--constraints $(VENV)/lock-constraints.txt --excludes $(VENV)/lock-excludes.txt \
		--no-header --output-file $(LOCK).new
	@{ printf '%s\n' "# Resolved from pyproject.toml by \`make lock\` (uv $(UV_VERSION): uv pip compile $(LOCK_FLAGS)," \
		"# torchvision excluded, torch resolved as $(TORCH) but installed by the Makefile's TORCH pin)." \
		"# Installed with pip --require-hashes by \`make demo\` and \`make test\`; do not edit by hand."; \
		cat $(LOCK).new; } > $(LOCK) && rm -f $(LOCK).new

# The suite against the newest releases pyproject.toml allows, in a separate virtualenv; torch stays at
# $(TORCH) (a newer torch on PyPI is a multi-GB CUDA build: `make test-latest TORCH=torch` to take it).
test-latest: browser
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	@printf '%s\n' "$(TORCH)" > $(LATEST)/torch-pin.txt
	$(LATEST)/bin/python $(PIP) "$(TORCH)"
	$(LATEST)/bin/python $(PIP) --upgrade --upgrade-strategy eager -c $(LATEST)/torch-pin.txt -e ".[dev]"
	$(LATEST)/bin/python $(PIP) --upgrade --no-deps "spandrel>=0.4,<0.5"
	$(LATEST)/bin/python -m pip list --format freeze > $(LATEST)/versions.txt
	$(LATEST)/bin/ruff check .
	HF_HUB_OFFLINE=1 $(LATEST)/bin/python -m pytest -q

clean-venv:
	rm -rf $(VENV) $(LATEST)
