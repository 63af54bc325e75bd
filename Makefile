# tcpdct: set-up and entry points. `make sim` and `make test` work on a fresh machine with
# python3 (3.11 or 3.12), g++ and make: they create .venv and install the project into it first.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Written once the install succeeded; it is older than pyproject.toml when the dependencies
# changed, which makes the next target re-install.
STAMP  := $(VENV)/.installed

BUILD_DIR := build

# make sim: replay a capture through the core (see sim/replay.py --help).
PCAP     ?=
LOCAL    ?=
DELEGATE ?= auto
JSON     ?=
DUMP     ?=
WAVES    ?=
# FAST=1: the RTL through the compiled Verilator harness (sim/replay_fast.py) instead of cocotb.
FAST     ?=

# make test: what pytest runs (a narrower selection: TESTS=tb/unit/test_cli.py).
TESTS ?= tb

# make verilog / make lint: build parameters (tcpdct.params.Params); empty means the default.
DATA_WIDTH        ?=
N_ENTRIES         ?=
BUFFERS_PER_CONN  ?=
LEGACY_RING_DEPTH ?=
RX_BUFFER_BYTES   ?=
MAX_FRAME_BYTES   ?=
MAX_BURST_BEATS   ?=

# An option only when its variable is set, so that the defaults stay in one place (Params).
opt = $(if $(strip $(2)),$(1) $(strip $(2)))
true_values := 1 yes true on

SIM_ARGS = $(call opt,--pcap,$(PCAP)) $(call opt,--local,$(LOCAL)) \
           $(call opt,--delegate,$(DELEGATE)) $(call opt,--json,$(JSON)) \
           $(call opt,--dump,$(DUMP)) $(if $(filter $(true_values),$(WAVES)),--waves) \
           $(if $(filter $(true_values),$(FAST)),--backend fast)

PARAM_ARGS = $(call opt,--data-width,$(DATA_WIDTH)) $(call opt,--n-entries,$(N_ENTRIES)) \
             $(call opt,--buffers-per-conn,$(BUFFERS_PER_CONN)) \
             $(call opt,--legacy-ring-depth,$(LEGACY_RING_DEPTH)) \
             $(call opt,--rx-buffer-bytes,$(RX_BUFFER_BYTES)) \
             $(call opt,--max-frame-bytes,$(MAX_FRAME_BYTES)) \
             $(call opt,--max-burst-beats,$(MAX_BURST_BEATS))

.PHONY: all install sim test verilog lint docs clean distclean bench

all: test

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --quiet -e '.[dev]'
	@touch $@

# The same import path as the tests have (pyproject.toml, tool.pytest pythonpath).
sim: $(STAMP)
	PYTHONPATH=$(CURDIR)/tb:$(CURDIR)/sim $(PY) sim/replay.py $(strip $(SIM_ARGS))

test: $(STAMP)
	$(PY) -m pytest -n 2 $(TESTS)

verilog: $(STAMP)
	$(PY) -m tcpdct.cli -o $(BUILD_DIR)/tcpdct.v $(strip $(PARAM_ARGS))

lint: verilog
	$(PY) sim/toolchain.py verilator --lint-only -Wall --top-module tcpdct \
		rtl/tcpdct/lint.vlt $(BUILD_DIR)/tcpdct.v

docs: $(STAMP)
	$(PY) -m tcpdct.docgen

clean:
	rm -rf $(BUILD_DIR) sim/build sim/out .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# make synth: resource use and Fmax on an ECP5 (sim/synth.py --help); SYNTH_CONFIGS picks a
# subset, e.g. SYNTH_CONFIGS="64x16 cam16". The YoWASP Yosys and nextpnr are installed into
# .venv only here, so that `make test` does not download them. SYNTH_ROUTER=router2 routes the
# largest configurations (64x256) in a fraction of router1's time. SYNTH_PORT_REGISTERS=1 places
# the whole core with a register on every port, as in a design (sim/synth.py --port-registers).
SYNTH_CONFIGS ?=
SYNTH_ROUTER  ?=
SYNTH_PORT_REGISTERS ?=
SYNTH_STAMP   := $(VENV)/.synth-installed

.PHONY: synth

$(SYNTH_STAMP): $(STAMP)
	$(PY) -m pip install --disable-pip-version-check --quiet -e '.[dev,synth]'
	@touch $@

synth: $(SYNTH_STAMP)
	PYTHONPATH=$(CURDIR)/tb:$(CURDIR)/sim $(PY) sim/synth.py \
		$(strip $(call opt,--configs,$(SYNTH_CONFIGS)) $(call opt,--router,$(SYNTH_ROUTER)) \
		$(if $(SYNTH_PORT_REGISTERS),--port-registers) -o $(BUILD_DIR)/synth)

# make bench: line-rate figures of the RTL through the compiled harness (sim/bench.py --help).
bench: $(STAMP)
	PYTHONPATH=$(CURDIR)/tb:$(CURDIR)/sim $(PY) sim/bench.py --json $(BUILD_DIR)/bench.json

# make replay-bench: the fast replay's speed against the cocotb replay's on one capture (PCAP=
# picks it; sim/replay_bench.py --help): cycles, wall seconds and cycles/s of each and their
# ratio, JSON in build/replay-bench.json.
.PHONY: replay-bench

replay-bench: $(STAMP)
	PYTHONPATH=$(CURDIR)/tb:$(CURDIR)/sim $(PY) sim/replay_bench.py \
		$(strip $(call opt,--pcap,$(PCAP)) --json $(BUILD_DIR)/replay-bench.json)

# make formal: every formal proof of tb/formal (docs/verification.md, "Formal proofs") and a
# table of the results; FORMAL_ARGS passes options to the runner, e.g. FORMAL_ARGS="--only
# match_cam" or "--list". YoWASP Yosys and Boolector are installed into .venv only here.
FORMAL_ARGS  ?=
FORMAL_STAMP := $(VENV)/.formal-installed

.PHONY: formal

$(FORMAL_STAMP): $(STAMP)
	$(PY) -m pip install --disable-pip-version-check --quiet -e '.[dev,formal]'
	@touch $@

formal: $(FORMAL_STAMP)
	PYTHONPATH=$(CURDIR)/tb:$(CURDIR)/sim $(PY) -m formal.runner $(FORMAL_ARGS)

# make regress: the constrained-random regression (tb/cocotb/test_regress_runner.py, see
# docs/verification.md): COUNT random actions with SEED on each configuration of
# REGRESS_CONFIGS ("system", "system512": the build of the system tests at 64 and 512 bits;
# "jumbo": max_frame_bytes=9018). It
# prints the coverage of every rule bin, writes $(BUILD_DIR)/regress-coverage.json, and fails on
# any scoreboard or memory-safety error (printing the TCPDCT_SEED that replays it) or on a bin
# never hit.
SEED            ?= 1
COUNT           ?= 2000
REGRESS_CONFIGS ?= system system512 jumbo

.PHONY: regress

regress: $(STAMP)
	PYTHONPATH=$(CURDIR)/tb:$(CURDIR)/sim:$(CURDIR)/tb/cocotb $(PY) tb/cocotb/test_regress_runner.py \
		--seed $(SEED) --count $(COUNT) --configs $(REGRESS_CONFIGS) \
		--json $(BUILD_DIR)/regress-coverage.json
