# Two commands set everything up on a fresh machine:
#   make demo   - the main job on the embedded default (PostgreSQL started from pgserver)
#   make test   - the test suite (PostgreSQL on 127.0.0.1:5432, TEXTCLF_TEST_DATABASE_URL, or
#                 else an embedded server from pgserver, as for the demo)
# Both create or reuse the virtual environment in .venv. `make lint`: ruff and mypy.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.textclf-installed

.PHONY: demo test lint venv bench bench-quick bench-quality clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "textclf needs Python >= 3.11 (set PYTHON=python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine.
	$(BIN)/python -m pip install --quiet "torch==2.13.0" -c constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,celery,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/textclf demo

test: $(STAMP)
	bash tests/install_system_deps.sh
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Every benchmark against its baseline at the sizes of the goals (about 25 min on 2 cores).
bench: $(STAMP)
	$(BIN)/python bench/run.py

# The same code at small sizes, for CI (under 3 minutes); size-independent goals enforced.
bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick --enforce

# TF-IDF quality on three corpora against the exact scikit-learn reference (docs/benchmarks.md);
# QUICK=1: at most 2,000 rows a corpus, for CI (a few minutes).
bench-quality: $(STAMP)
	$(BIN)/python bench/quality.py $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) .textclf
