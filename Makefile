# minisip: `make serve` serves the default config, `make test` runs the whole suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test venv peers lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Real SIP peers for the interop tests (Debian packages; CI runs as root):
# sipp (sip-tester), socat (TLS in front of sipp), baresip (a real softphone).
PEERS := sip-tester socat baresip-core
peers:
	@command -v sipp >/dev/null && command -v socat >/dev/null && command -v baresip >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(PEERS); }

serve: $(STAMP)
	$(BIN)/minisip serve --config-dir configs --data-dir data

test: $(STAMP) peers
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/pip install -q ruff
	$(BIN)/ruff check --select E,F,W,B --ignore B905,B008 minisip bench

bench: $(STAMP) peers
	$(BIN)/python bench/register.py

clean:
	rm -rf $(VENV) data build *.egg-info
