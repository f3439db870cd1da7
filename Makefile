# Two commands do everything:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test clean browser

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

# The MLflow UI test drives Debian's chromium; install it when we can (root), else say so.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "note: chromium/chromium-driver not installed: the MLflow UI test is skipped (and fails under CI=true)"

test: setup browser
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) tlmed-workspace .pytest_cache
