# websockify.py — build, test, demo and benchmark.
#   make          build rebind.so (the LD_PRELOAD shim for wrapping programs)
#   make test     install the test dependencies once, then run every test
#   make check    only the socket-free tests, in seconds, with nothing installed:
#                 WEBSOCKIFY_CHECK=1 makes test_websockify's load_tests hook keep the
#                 TestCases derived from SocketFreeTestCase (no socket, no process)
#   make demo     run a demo a browser can open (needs nothing but Python)
#   make fuzz     the property-based tests (hypothesis) with many more examples and
#                 fresh seeds: FUZZ_EXAMPLES=N (default 5000)
#   make soak     a long mixed load (tiny-frame floods, slowloris, good clients): a table
#                 of memory, CPU and latency per period; SOAK_SECONDS=N (default 120)
#   make bench    compare against upstream websockify with ../shared/bench (ws://, wss://, 4 streams)
PYTHON  ?= python3
CC      ?= gcc
CFLAGS  ?= -O2 -g
CFLAGS  += -Wall -Wextra
BUILD   := build
VENV    := $(BUILD)/venv
UPSTREAM_VENV := $(BUILD)/upstream-venv
NODEDIR := $(BUILD)/node
BENCH   ?= ../shared/bench
DEMO_PORT ?= 6080
PIP_PACKAGES := websockets websocket-client trustme playwright vermin cryptography pyjwt \
                hypothesis
APT_PACKAGES := chromium telnetd-ssl socat openssl redis-server haproxy

.PHONY: all test check test-deps unit node-test floor lint fuzz soak demo bench clean

all: rebind.so

rebind.so: rebind.c
	$(CC) $(CFLAGS) -shared -fPIC -o rebind.so rebind.c -ldl

# -- test dependencies, each behind a stamp so that they install once --------
$(VENV)/.stamp: Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check $(PIP_PACKAGES)
	touch $@

# Upstream websockify 0.13 in a venv of its own, never on the tests' path: the
# TestUpstream* programs run against it too (WEBSOCKIFY_UPSTREAM_VENV overrides it).
$(UPSTREAM_VENV)/.stamp:
	$(PYTHON) -m venv $(UPSTREAM_VENV)
	$(UPSTREAM_VENV)/bin/pip install -q --disable-pip-version-check websockify==0.13.0
	touch $@

$(NODEDIR)/.stamp:
	mkdir -p $(NODEDIR)
	cd $(NODEDIR) && npm install --no-audit --no-fund --silent ws@8
	touch $@

$(BUILD)/.apt-stamp: Makefile
	@mkdir -p $(BUILD)
	@if ! command -v chromium >/dev/null || ! command -v in.telnetd >/dev/null \
	    || ! command -v socat >/dev/null || ! command -v openssl >/dev/null \
	    || ! command -v redis-server >/dev/null \
	    || ! PATH="$$PATH:/usr/sbin" command -v haproxy >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); \
	fi
	touch $@

test-deps: $(VENV)/.stamp $(NODEDIR)/.stamp $(BUILD)/.apt-stamp $(UPSTREAM_VENV)/.stamp

# -- the tests ----------------------------------------------------------------
test: all test-deps lint unit node-test floor

check:
	WEBSOCKIFY_CHECK=1 $(PYTHON) -m unittest test_websockify

lint:
	$(VENV)/bin/vermin -q --no-tips --violations -t=3.6- websockify.py web/demo.py

unit:
	WEBSOCKIFY_REQUIRE_ALL=1 NODE_PATH=$(CURDIR)/$(NODEDIR)/node_modules \
	  $(VENV)/bin/python -m unittest -v test_websockify

FUZZ_EXAMPLES ?= 5000
fuzz: test-deps
	WEBSOCKIFY_REQUIRE_ALL=1 WEBSOCKIFY_FUZZ_RANDOM=1 WEBSOCKIFY_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
	  $(VENV)/bin/python -m unittest -v test_websockify.TestProtocolFuzz \
	  test_websockify.TestWebFuzz test_websockify.TestTokenFileFuzz

SOAK_SECONDS ?= 120
soak:
	$(PYTHON) .ci/soak.py --seconds $(SOAK_SECONDS)

node-test:
	node --test web/tests/

# The floor: the stdlib-only tests under pyenv's Python 3.6 and 3.7 (the oldest
# supported); a version pyenv does not have is skipped with a line saying so.
FLOOR_VERSIONS ?= 3.6 3.7
floor:
	@for v in $(FLOOR_VERSIONS); do \
	  ver=$$(pyenv versions --bare 2>/dev/null | grep -m1 "^$$v\." || true); \
	  if [ -n "$$ver" ]; then \
	    echo "== Python $$ver (floor), stdlib-only tests"; \
	    PYENV_VERSION=$$ver python3 -m unittest test_websockify || exit 1; \
	  else \
	    echo "== no Python $$v under pyenv: floor check skipped"; \
	  fi; \
	done

# -- demo and benchmark ---------------------------------------------------------
demo:
	$(PYTHON) web/demo.py --port $(DEMO_PORT)$(if $(DEMO_ECHO_PORT), --echo-port $(DEMO_ECHO_PORT))

# Full mode (7 interleaved runs per metric) over ws://, then quick runs over
# wss:// and with 4 streams on both cores (--workers 2 against the forking upstream),
# then burst.py: BURST_SESSIONS sessions all sending at once (drain time per round).
BURST_SESSIONS ?= 500,1000,2000,3000,5000
BENCH_RUN = BENCH_HOME=$(CURDIR)/$(BUILD)/bench $(BENCH)/run.sh
OURS = $(PYTHON) $(CURDIR)/websockify.py
bench: all
	$(BENCH_RUN) --out $(BUILD)/bench/results \
	  ours='$(OURS) {listen} {target}' upstream-numpy upstream node websocat socat-tcp
	$(BENCH_RUN) --quick --tls --out $(BUILD)/bench/results-tls \
	  ours='$(OURS) --cert {cert} --key {key} {listen} {target}' upstream-numpy socat-tcp
	$(BENCH_RUN) --quick --streams 4 --proxy-cpus 0,1 --out $(BUILD)/bench/results-streams \
	  ours-workers2='$(OURS) --workers 2 {listen} {target}' ours='$(OURS) {listen} {target}' \
	  upstream-numpy node websocat socat-tcp
	BENCH_HOME=$(CURDIR)/$(BUILD)/bench $(PYTHON) $(BENCH)/burst.py --sessions $(BURST_SESSIONS) \
	  --rounds 5 --timeout 60 ours='$(OURS) {listen} {target}' \
	  ours-workers2='$(OURS) --workers 2 {listen} {target}' node websocat \
	  | tee $(BUILD)/bench/burst.txt
	@for d in results results-tls results-streams; do echo; cat $(BUILD)/bench/$$d/results.md; done
	@echo; grep '^|' $(BUILD)/bench/burst.txt

clean:
	rm -rf $(BUILD) rebind.so __pycache__
