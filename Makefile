# Two commands for a fresh machine (each sets up .venv by itself, idempotently):
#   make demo   render the demo film into reel-out/demo/
#   make test   run the test suite (offline, CPU)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch 2.13.0 lies on this project's machines; on a CUDA workstation the same pin
# installs PyPI's CUDA build. Override with `make TORCH=torch==X demo`.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-16)

.PHONY: demo test setup clean-venv browser

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/reel demo

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# The web-page test drives Debian's chromium (Playwright never downloads a browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "chromium is not installed and cannot be installed here: the browser test will be skipped"; fi; }

setup: $(STAMP)

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	$(PY) -m pip install -q --disable-pip-version-check --no-deps "spandrel==0.4.2"
	@rm -f $(VENV)/.installed-*
	@touch $@

clean-venv:
	rm -rf $(VENV)
