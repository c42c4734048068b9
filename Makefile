# tinyml-pipeline: `make train quantize flash` is the whole job; `make test` checks it.
# Every target first makes the virtual environment (.venv, installed once, remembered by a
# stamp). Stages are file targets in the run directory, so only what is stale runs again.

PYTHON  ?= python3
VENV    := .venv
STAMP   := $(VENV)/.installed
PY      := $(VENV)/bin/python
TINYML  := $(VENV)/bin/tinyml

# Python's bytecode cache for everything these commands run goes in the virtual environment
# (.venv/pycache), also where the environment says not to write it (PYTHONDONTWRITEBYTECODE,
# set on this project's machines): without a cache, every process compiled TensorFlow again
# to import it (11.5 s against 5.6 s), the train stage, each of its search workers and
# quantize. Compiling all packages at install instead (uv --compile-bytecode) took 15-17 s;
# this compiles what is imported, once. The sources' own folders get no __pycache__.
export PYTHONPYCACHEPREFIX ?= $(CURDIR)/$(VENV)/pycache
export PYTHONDONTWRITEBYTECODE :=

DATASET ?= motion
CONFIG  ?=
RUN     ?= models
DEVICE  ?= emu
SEED    ?=
PORT    ?= emu

STAGE_ARGS := --dataset $(DATASET) --run $(RUN) $(if $(CONFIG),--config $(CONFIG)) $(if $(SEED),--seed $(SEED))
PARAMS     := $(RUN)/.make-params
PARAMS_TXT := dataset=$(DATASET) config=$(CONFIG) seed=$(SEED)

.PHONY: setup train quantize flash eval monitor report bench test lint clean distclean help FORCE
.DEFAULT_GOAL := help

help:
	@echo "make train quantize flash   train, quantize and evaluate on the (virtual) device"
	@echo "make test                   the test suite (creates .venv on first use)"
	@echo "make report | eval | monitor | bench | setup | clean | distclean"
	@echo "variables: DATASET=$(DATASET) CONFIG=$(CONFIG) RUN=$(RUN) DEVICE=$(DEVICE) SEED=$(SEED)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "tinyml-pipeline needs Python >= 3.10, $(PYTHON) is " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	@# uv installs the same packages as pip from the same index, in parallel and from its own
	@# cache of unpacked wheels: a fresh clone's setup took 18 s instead of pip's 120-143 s on
	@# this project's loaded 2-core machine (TensorFlow's wheel is about 570 MB; docs/install.md).
	@# pip itself only fetches uv; without a uv wheel for this platform, pip installs as before.
	@if $(VENV)/bin/pip install --quiet uv; then \
	  $(VENV)/bin/uv pip install --quiet --python $(PY) -e '.[dev]'; \
	else \
	  echo "setup: uv could not be installed; installing with pip (slower)"; \
	  $(VENV)/bin/pip install --quiet -e '.[dev]'; \
	fi
	@touch $@

# The stage parameters live in a file that changes only when they do, so a new DATASET,
# CONFIG or SEED makes the stages stale, and the same ones do not.
$(PARAMS): FORCE
	@mkdir -p $(RUN)
	@echo '$(PARAMS_TXT)' | cmp -s - $@ || echo '$(PARAMS_TXT)' > $@

$(RUN)/float.keras: $(STAMP) $(PARAMS) $(CONFIG)
	$(TINYML) train $(STAGE_ARGS)

$(RUN)/int8.tflite: $(RUN)/float.keras
	$(TINYML) quantize $(STAGE_ARGS)

$(RUN)/device_report.json: $(RUN)/int8.tflite
	$(TINYML) flash $(STAGE_ARGS) --device $(DEVICE)

train: $(RUN)/float.keras
quantize: $(RUN)/int8.tflite
flash: $(RUN)/device_report.json

eval: $(STAMP)
	$(TINYML) eval $(STAGE_ARGS) --device $(DEVICE)

monitor: $(STAMP)
	$(TINYML) monitor $(PORT) --run $(RUN)

report: $(STAMP)
	$(TINYML) report --run $(RUN)

bench: $(STAMP)
	@mkdir -p bench/results
	$(PY) bench/bench_train.py
	$(PY) bench/bench_quantize.py --run bench/results/run
	$(PY) bench/bench_device.py --model bench/results/run/int8.tflite
	$(PY) bench/bench_qemu.py --run bench/results/run
	$(PY) bench/bench_compiler.py --run bench/results/run
	$(PY) bench/bench_memory.py --default-run bench/results/run
	$(PY) bench/bench_kernels.py
	$(if $(CMSIS_NN),$(PY) bench/bench_cmsis_nn.py --cmsis-nn $(CMSIS_NN),@echo "CMSIS-NN: not measured (CMSIS_NN=DIR names its hand-fetched sources; bench/bench_cmsis_nn.py)")
	$(PY) bench/bench_latency.py --holdout run=bench/results/run/int8.tflite
	$(PY) bench/bench_search.py
	$(PY) bench/bench_job.py
	$(PY) bench/summary.py
	@echo "figures: bench/results/*.json; headline figures: bench/results.json (commit it)"

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline firmware_bridge tests tinyml_cli.py

clean:
	rm -rf $(RUN)

distclean: clean
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis bench/results
