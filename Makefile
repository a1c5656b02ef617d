# `make demo`: the main job end to end on ML-100K. `make test`: the test suite.
# Both create (or refresh, when the requirements change) the virtual environment in .venv first.

VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

export ATNN_DATA_DIR ?= $(abspath ../shared/datasets)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(abspath var/prefect)

.PHONY: venv demo test clean bench-readers serve stop bench-quality bench-quality-quick bench-speed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: this pin takes the CPU wheel from the machine's disk, not a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/atnn demo

test: venv
	$(VENV)/bin/pytest

bench-readers: venv
	$(VENV)/bin/atnn bench-readers --output benchmarks/readers.json

# The local service: Prefect server on 127.0.0.1, a process worker, every deployment of prefect.yaml.
# State, logs and PID files in $(PREFECT_HOME) (var/prefect). `make stop` stops the worker, then the server.
serve: venv
	$(VENV)/bin/atnn serve

stop:
	$(VENV)/bin/atnn stop

# Ranking quality (README, "Ranking quality"): every model, ML-100K random-item + ml-latest-small
# temporal, 5 seeds -> benchmarks/quality.json and .md (about 17 min on 2 cores, the issue allows 45;
# resumes from var/bench-quality/cache). QUICK=1 (or bench-quality-quick): one seed, few epochs, under
# a minute (the issue allows 5), to var/.
bench-quality: venv
	$(PY) -m atnn.benchmark $(if $(QUICK),--quick)

bench-quality-quick: venv
	$(PY) -m atnn.benchmark --quick

# Speed (README, "Scale"): a SYNTHETIC 1M-user, 1M-item, 50M-event shop in var/synth (made once),
# then each stage in its own process, medians of 3 runs -> benchmarks/speed.json and .md.
# STAGES=daily_rank_1m,dask (say) measures only those and keeps the others' figures.
bench-speed: venv
	$(PY) -m atnn.speed $(if $(STAGES),--stages $(STAGES))

clean:
	rm -rf var onnx/atnn-*
