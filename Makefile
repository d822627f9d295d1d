# The two commands of the README, and the few a developer needs besides.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: dev lint test fuzz proto bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)
	$(VENV)/bin/ctl dev examples/Procfile --agents 3 --scale web=3,worker=2

# ruff and mypy, configured in pyproject.toml (the generated proto/ code is left out).
# Both always run, so one pass shows every finding; lint fails if either found any.
lint: $(STAMP)
	status=0; $(VENV)/bin/ruff check . || status=1; $(VENV)/bin/mypy || status=1; exit $$status

# Two workers, each file's tests on one of them (a file's module-scoped cluster is shared):
# most of a test's time is its cluster waiting on timers, so two share the machine well.
test: $(STAMP) lint
	$(PY) -m pytest -q -n 2 --dist loadfile tests

# The fuzz test alone, 20 times as many examples as in `make test` (tests/test_fuzz.py).
fuzz: $(STAMP)
	FORMATION_FUZZ_SCALE=20 $(PY) -m pytest -q --timeout 7200 tests/test_fuzz.py

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# The quick benchmark set (under 10 minutes): writes docs/benchmarks.md and bench/results.json.
bench: $(BENCH_STAMP)
	$(PY) -m bench.run

proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. proto/formation.proto

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
