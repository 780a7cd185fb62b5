# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_DB := runs/demo.duckdb

.PHONY: demo test test-slow lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the project's metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[train,test]'
	touch $@

install: $(VENV)/.installed

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/teachloop run --config examples/arithmetic.toml --db $(DEMO_DB)
	@echo "Logged to $(DEMO_DB). Query it: $(BIN)/python -c \"import duckdb; print(duckdb.connect('$(DEMO_DB)', read_only=True).sql('SELECT kind, count(*) FROM messages GROUP BY kind'))\""

test: install
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

# End-to-end tests on the real embedded model (and, later, real servers).
test-slow: install
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -m slow

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs build *.egg-info
