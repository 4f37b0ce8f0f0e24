# make run   - set up .venv (first time) and run the default job
# make test  - set up .venv (first time) and run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PLUGINS := $(wildcard plugins/*/pyproject.toml) $(wildcard launchers/*/pyproject.toml)
STAMP := $(VENV)/.scaleflow-installed

# Horovod has no wheels and must be compiled against the installed TensorFlow (~5 min on 2 cores);
# the wheel is cached outside the checkout so fresh clones on this machine reuse it.
WHEEL_DIR ?= $(HOME)/.cache/scaleflow/wheels
export WHEEL_DIR

.PHONY: install horovod run test test-fast bench clean

$(STAMP): pyproject.toml $(PLUGINS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	# TF Serving's config protos, to check models.config in tests; its metadata requires the full
	# `tensorflow` package (not tensorflow-cpu), hence --no-deps.
	$(PIP) install --quiet --no-deps tensorflow-serving-api==2.21.0
	touch $@

install: $(STAMP)

horovod: install
	PYTHON=$(PY) plugins/scaleflow_horovod/build_horovod.sh

run: install
	$(PY) -m scaleflow $(ARGS)

# The whole suite, Horovod included (built on first use).
test: install horovod
	$(PY) -m pytest $(PYTEST_ARGS)

# Without the multi-process and server tests (marked slow).
test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
