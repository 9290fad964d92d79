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

bench: $(STAMP)
	$(BIN)/python bench/catalog.py
	$(BIN)/python bench/queue.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/schedule.py

clean:
	rm -rf $(VENV) var
