# Two entry points: `make pipeline` (set up + run the default DVC pipeline) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup pipeline remote push pull test lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints/cpu.txt -e ".[dev]"
	touch $@

pipeline: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# DVC's default remote: ../tandem-remote, a folder beside the repo (.dvc/config). `make remote`
# pins that folder's absolute path in .dvc/config.local (git-ignored): DVC resolves a relative URL
# inside the git tree when it pushes a commit or an experiment rather than the workspace. `make
# push` shares the outputs and the run-cache; a teammate's clone runs `make pull`, then `dvc repro`
# reruns nothing. Experiments travel with `dvc exp push`; S3/GCS/Azure: see docs/remote.md.
remote: setup
	$(BIN)/dvc remote modify --local local url "$(abspath ..)/tandem-remote"

push: remote
	$(BIN)/dvc push --run-cache

pull: remote
	$(BIN)/dvc pull --run-cache

test: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src stages tests benchmarks
