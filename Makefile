# Two commands for a fresh machine: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install kafka demo test unit integration typecheck bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

kafka:  ## Kafka 4 broker jars from Maven Central into .cache/kafka/libs (a no-op once there); tests start the broker
	bash scripts/kafka-broker install

demo: install  ## the main job on the embedded default (no servers)
	$(BIN)/driftline demo

test: install kafka typecheck  ## every test: unit, integration (real Kafka broker, chDB), doctests, mypy --strict on the engine
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest tests/unit driftline

integration: install kafka
	$(BIN)/python -m pytest tests/integration

typecheck: install
	$(BIN)/python -m mypy driftline/engine

bench: install  ## engine benchmarks; Evidently runs in its own venv (.venv-bench), created on first use
	$(BIN)/python -m benchmarks.engine

bench-quick: install  ## smoke run in seconds: 200k rows, 2 repeats, no Evidently
	$(BIN)/python -m benchmarks.engine --quick --no-evidently

clean:
	rm -rf $(VENV) .venv-bench .pytest_cache .mypy_cache .hypothesis
