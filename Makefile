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
	HF_HUB_OFFLINE=1 $(BIN)/teachloop loop --config examples/arithmetic.toml --db $(DEMO_DB) --rounds 1
	$(BIN)/teachloop report --db $(DEMO_DB) --out runs/report
	@echo
	@echo "Every message is in $(DEMO_DB); plots and a summary are in runs/report/report.md. Try:"
	@echo "  $(BIN)/teachloop sql --db $(DEMO_DB) 'SELECT * FROM topic_accuracy'"
	@echo "  $(BIN)/teachloop lessons --db $(DEMO_DB)"
	@echo "  $(BIN)/teachloop replay --db $(DEMO_DB) LESSON_ID"

test: install
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

# End-to-end tests on the real embedded model (and, later, real servers).
test-slow: install
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -m slow

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs build *.egg-info
