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

# Real SIP peers for the interop tests (Debian packages; CI runs as root).
peers:
	@command -v sipp >/dev/null && command -v socat >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq sip-tester socat; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq sip-tester socat; fi; }

serve: $(STAMP)
	$(BIN)/minisip serve --config-dir configs --data-dir data

test: $(STAMP) peers
	$(BIN)/python -m pytest

bench: $(STAMP) peers
	$(BIN)/python bench/register.py

clean:
	rm -rf $(VENV) data build *.egg-info
