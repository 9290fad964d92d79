PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium

.PHONY: run test lint bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,postgres]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/blanket server --config-dir conf.d --workers 2

# The browser tests drive a real headless Chromium: install Debian's package when missing
# (as root, as CI runs); elsewhere they are skipped, and under CI=true they fail.
browser:
	@test -x $(CHROMIUM) || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium is missing: the browser tests will be skipped (apt-get install chromium)"; fi; }

test: $(STAMP) browser
	$(BIN)/ruff check blanket tests bench
	$(BIN)/pytest -n auto -q

lint: $(STAMP)
	$(BIN)/ruff check blanket tests bench

# -P: bench/queue.py must not shadow the standard library's queue module.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -P bench/catalog.py
	$(BIN)/python -P bench/queue.py
	$(BIN)/python -P bench/throughput.py --rounds 3
	$(BIN)/python -P bench/schedule.py
	$(BIN)/python -P bench/inbox.py

clean:
	rm -rf $(VENV) var
