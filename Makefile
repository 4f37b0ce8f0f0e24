# make run   - set up .venv (first time) and run the default job
# make test  - set up .venv (first time) and run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PLUGINS := $(wildcard plugins/*/pyproject.toml) $(wildcard launchers/*/pyproject.toml)
STAMP := $(VENV)/.scaleflow-installed

.PHONY: install run test bench clean

$(STAMP): pyproject.toml $(PLUGINS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $@

install: $(STAMP)

run: install
	$(PY) -m scaleflow $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
