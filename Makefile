# Two commands for a fresh machine: `make run` (main job) and `make test` (test suite).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench up clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/mlcrypto run

test: $(STAMP)
	$(BIN)/python -m pytest -q

# House rules (docs/development.md): ruff, the import contracts, mypy on core/ and models/. All three run;
# the target fails if any failed.
lint: $(STAMP)
	@status=0; \
	echo "== ruff"; $(BIN)/ruff check . || status=1; \
	echo "== import contracts"; $(BIN)/lint-imports || status=1; \
	echo "== mypy"; $(BIN)/mypy || status=1; \
	exit $$status

bench: $(STAMP)
	MLCRYPTO_BENCH_MAIN_JOB=$${MLCRYPTO_BENCH_MAIN_JOB:-1} $(BIN)/python -m bench

up: $(STAMP)
	$(BIN)/mlcrypto up

clean:
	rm -rf $(VENV) var
