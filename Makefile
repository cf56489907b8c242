# The two commands of the README: `make run` and `make test`. Everything else is set up on the way.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint format bench soak lock clean

run: $(INSTALLED)
	$(BIN)/python manage.py bootstrap
	exec $(BIN)/gunicorn -c config/gunicorn.conf.py

test: $(INSTALLED)
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/pytest $(PYTEST_ARGS)

# 60 s at 32 connections against 4 gunicorn workers on loopback; fails on any error or memory growth.
# On PostgreSQL: DATABASE_URL=postgres://... make soak (a throwaway database, dropped afterwards).
soak: $(INSTALLED)
	$(BIN)/python scripts/soak.py $(SOAK_ARGS)

# The benchmark (docs/benchmarks.md): each row BENCH_SECONDS (default 10) at 16 and 64 connections,
# as a ratio to a bare Django view; on PostgreSQL when DATABASE_URL is set. More: BENCH_ARGS=--help.
BENCH_SECONDS ?= 10
bench: $(INSTALLED)
	$(BIN)/python -m bench.run --seconds $(BENCH_SECONDS) $(BENCH_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Reinstalled whenever pyproject.toml or the lock changes; the lock pins every version.
$(INSTALLED): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint requirements.lock -e '.[dev]'
	touch $@

# Re-resolve the lock from pyproject.toml's ranges (then review the diff and commit it).
lock: $(INSTALLED)
	$(BIN)/python -m pip install --quiet --upgrade -e '.[dev]'
	{ sed -n '1,2p' requirements.lock; $(BIN)/python -m pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) var
