# minisip: `make serve` serves the default config, `make test` runs the whole suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test venv peers lint coverage bench clean install-check compiled pure \
	compiled-check

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Real SIP peers for the interop tests (Debian packages; CI runs as root):
# sipp (sip-tester), socat (TLS in front of sipp), baresip (a real softphone),
# systemd (systemd-analyze verifies contrib/minisip.service), kamailio (a record-routing
# proxy in front of minisip).
PEERS := sip-tester socat baresip-core systemd kamailio
peers:
	@command -v sipp >/dev/null && command -v socat >/dev/null && command -v baresip >/dev/null \
	  && command -v systemd-analyze >/dev/null \
	  && { command -v kamailio >/dev/null || test -x /usr/sbin/kamailio; } || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(PEERS); }

serve: $(STAMP)
	@echo "minisip is installed in $(VENV)/bin: 'export PATH=$$PWD/$(VENV)/bin:\$$PATH' (or 'pipx install .') puts it on your PATH"
	$(BIN)/minisip serve --config-dir configs

# Four workers on any machine: the suite mostly waits on real processes (servers, sipp,
# baresip, prompts in real time), so more workers than cores; tests/conftest.py says
# which tests go where.
TEST_WORKERS ?= 4
test: $(STAMP) peers lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# What a user does (README "Install"): pip install . into a fresh environment, then
# the minisip command works from its PATH and finds its voice prompts. CI runs it once
# after the tests.
install-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  $(PY) -m venv "$$tmp/venv" && \
	  "$$tmp/venv/bin/pip" install -q . && \
	  PATH="$$tmp/venv/bin:$$PATH" && \
	  minisip --version && minisip user list --config-dir configs && \
	  (cd / && "$$tmp/venv/bin/python" -c \
	    "from minisip.media.prompts import prompt_path as p; print(p('zh', 'digits/7'), p('en', 'ringback'))")

# ruff's rules and mypy's strictness are in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check minisip bench
	$(BIN)/mypy

# Line coverage of the PBX core from the in-process tests alone (tests/pbx: no sockets, no peers)
coverage: $(STAMP)
	$(BIN)/python -m pytest tests/pbx -q --cov=minisip/pbx --cov-report=term-missing:skip-covered \
	  --cov-fail-under=85

bench: $(STAMP) peers
	$(BIN)/python bench/register.py

# Optional: the sans-IO core (sip/, transaction/, dialog/) compiled with mypyc, in place:
# Python imports the compiled modules before the .py files, and the .py files again once
# `make pure` removed them. About a third less CPU per registration (README figures).
compiled: $(STAMP)
	$(BIN)/pip install -q mypy "setuptools>=77"
	MINISIP_MYPYC=1 $(BIN)/python setup.py build_ext --inplace

# The compiled core passes the tests of what it compiles, and of the PBX on top: built in
# a copy of the tree (in place, its modules would shadow later edits of the .py files).
# CI runs it after the tests; the README's figures for the CPU targets are this build's.
compiled-check: $(STAMP)
	@command -v cc >/dev/null || { echo "no C compiler: the compiled core is not checked"; exit 0; } ; \
	  $(BIN)/pip install -q mypy "setuptools>=77" && \
	  tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  cp -r minisip tests configs prompts contrib README.md setup.py pyproject.toml "$$tmp"/ && \
	  cd "$$tmp" && MINISIP_MYPYC=1 $(CURDIR)/$(BIN)/python setup.py -q build_ext --inplace \
	    >build.log 2>&1 || { tail -20 build.log; exit 1; } && \
	  test -n "$$(find minisip/sip -name '*.so')" && \
	  $(CURDIR)/$(BIN)/python -c "import minisip.sip.parser as m; assert m.__file__.endswith('.so'), m.__file__" && \
	  $(CURDIR)/$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) \
	    tests/sip tests/transaction tests/dialog tests/pbx tests/e2e

pure:
	find minisip -name '*.so' -delete
	rm -rf build *__mypyc*.so

clean: pure
	rm -rf $(VENV) data build *.egg-info
