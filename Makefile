PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,postgres]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/blanket server --config-dir conf.d --workers 2

test: $(STAMP)
	$(BIN)/ruff check blanket tests bench
	$(BIN)/pytest -n auto -q

lint: $(STAMP)
	$(BIN)/ruff check blanket tests bench

# -P: bench/queue.py must not shadow the standard library's queue module.
bench: $(STAMP)
	$(BIN)/python -P bench/catalog.py
	$(BIN)/python -P bench/queue.py
	$(BIN)/python -P bench/throughput.py
	$(BIN)/python -P bench/schedule.py
	$(BIN)/python -P bench/inbox.py

clean:
	rm -rf $(VENV) var
