# Two commands for a fresh machine: `make run` (main job) and `make test` (test suite).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test bench up clean

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

bench: $(STAMP)
	MLCRYPTO_BENCH_MAIN_JOB=$${MLCRYPTO_BENCH_MAIN_JOB:-1} $(BIN)/python -m bench

up: $(STAMP)
	$(BIN)/mlcrypto up

clean:
	rm -rf $(VENV) var
