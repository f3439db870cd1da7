# Two commands do everything:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test clean

# torch==2.13.0 is pinned in pyproject.toml; pip takes the CPU wheel from the machine's
# find-links folder when there is one (see README, "Installing elsewhere").
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/tl-med demo

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) tlmed-workspace .pytest_cache
