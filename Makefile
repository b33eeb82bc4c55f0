# voicenlu: the two commands of the README, and the steps they are made of.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_DIR ?= runs/snips
# make demo QUICK=1: one epoch on 100 utterances per intent, a few minutes on a laptop CPU.
QUICK ?=
EXTRAS ?= train,serve,sign,values,speech,wyoming,test

.PHONY: setup data demo test browser voices lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python
	# torch first, from the pin: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q -c constraints.txt torch
	$(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRAS)]"

data: setup
	$(BIN)/voicenlu data download

demo: data
	$(BIN)/voicenlu train --output-dir $(RUN_DIR) --overwrite $(if $(QUICK),--quick,)
	$(BIN)/voicenlu predict $(RUN_DIR)/bundle \
		"add Diamonds to my roadtrip playlist" \
		"will it rain in Boston tomorrow?" \
		"book a table for 4 at a pizzeria in Paris tonight" \
		"play the latest album by Daft Punk on Spotify" \
		"what is the capital of France"

# Headless Chromium for the demo-page test (Debian's package; needs root). Without it the test
# skips on a workstation and fails in CI (CI set, as .ci/run does).
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null; fi

# espeak-ng speaks the requests of the speech tests (Debian's package; skipped without root).
voices:
	@if ! command -v espeak-ng >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; fi

test: setup browser voices
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
