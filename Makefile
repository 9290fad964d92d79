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

# The browser tests drive a real headless Chromium, and the completion tests load their
# scripts in zsh and fish: install Debian's packages when missing (as root, as CI runs);
# elsewhere those tests are skipped, and under CI=true they fail.
SYSTEM_PACKAGES := chromium zsh fish
browser:
	@missing=""; for p in $(SYSTEM_PACKAGES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing$$missing for the tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "missing$$missing: the tests that need them will be skipped (apt-get install$$missing)"; fi; \
	fi

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
	$(BIN)/python -P bench/interfaces.py
	$(BIN)/python -P bench/schedule.py
	$(BIN)/python -P bench/inbox.py
	$(BIN)/python -P bench/taskpage.py
	$(BIN)/python -P bench/backup.py
	$(BIN)/python -P bench/metrics.py
	$(BIN)/python -P bench/checkpoints.py
	$(BIN)/python -P bench/workflow.py

clean:
	rm -rf $(VENV) var
