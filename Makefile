# Every target bootstraps .venv on a fresh machine (needs only python3 with venv and pip).
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: run test bench lint clean

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@# stdout stays the targets' own (make bench prints one JSON object there)
	@$(VENV)/bin/python -m pip install --quiet --upgrade pip >&2
	@$(VENV)/bin/python -m pip install --quiet -e ".[dev]" >&2
	@touch $(STAMP)

## Run the whole product on embedded defaults (SQLite file, in-memory stores) in this terminal.
run: $(STAMP)
	$(VENV)/bin/hub run

## Run the whole test suite (needs PostgreSQL on 127.0.0.1:5432).
test: $(STAMP)
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .hub .pytest_cache

## Throughput and latency figures as one JSON object (PostgreSQL on 127.0.0.1:5432; load from wrk,
## installed with apt-get when missing). docs/benchmarks.md describes the fields and the knobs.
bench: $(STAMP)
	@$(VENV)/bin/python -m tests.bench
