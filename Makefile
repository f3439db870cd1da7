# Two commands do everything:  `make demo`  and  `make test`.
export PIP_ROOT_USER_ACTION := ignore
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test clean browser pacs federated stack stack-down

# torch==2.13.0 is pinned in pyproject.toml; pip takes the CPU wheel from the machine's
# find-links folder when there is one (see README, "Installing elsewhere").
# The install is quiet: pip's chatter goes to $(VENV)/install.log, shown only if it fails.
$(BIN)/.installed: pyproject.toml
	@echo "setting up $(VENV) (first time: about 3 minutes; log in $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install --upgrade pip && $(BIN)/pip install -e '.[dev]'; } > $(VENV)/install.log 2>&1 || \
	  { tail -n 25 $(VENV)/install.log; echo "error: installing into $(VENV) failed (full log: $(VENV)/install.log)"; exit 1; }
	@touch $@

setup: $(BIN)/.installed

demo: setup
	@$(BIN)/tl-med demo

# The MLflow UI test drives Debian's chromium; install it when we can (root), else say so.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && apt-get update -qq >>$(VENV)/apt.log 2>&1 && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >>$(VENV)/apt.log 2>&1; } || \
	  echo "note: chromium/chromium-driver not installed: the MLflow UI test is skipped (and fails under CI=true)"

# The PACS tests run a real Orthanc fed by dcmtk's storescu; install them when we can (root).
pacs:
	@command -v storescu >/dev/null 2>&1 && { command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ]; } || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && apt-get update -qq >>$(VENV)/apt.log 2>&1 && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc dcmtk >>$(VENV)/apt.log 2>&1; } || \
	  echo "note: orthanc/dcmtk not installed: the PACS tests are skipped (and fail under CI=true)"

# The federated tests need the optional NVFlare extra (7 small packages); install it into the venv once.
federated: setup
	@$(BIN)/python -c "import nvflare" >/dev/null 2>&1 || \
	  { $(BIN)/pip install -e '.[federated]' > $(VENV)/federated-install.log 2>&1 || \
	    { tail -n 25 $(VENV)/federated-install.log; echo "error: installing the federated extra failed"; exit 1; }; }

test: setup browser pacs federated
	@$(BIN)/python -m pytest

# The production topology as native processes (PostgreSQL, MLflow tlmed-auth, Prefect server + worker)
# under $(TL_MED_HOME)/stack; APPROVERS="dr_chen dr_osei" names the accounts that may move champion.
TL_MED_HOME ?= tlmed-workspace
stack: setup
	@$(BIN)/python -m tl_med.stack up --workspace $(TL_MED_HOME) $(foreach a,$(APPROVERS),--approver $(a))

stack-down:
	@$(BIN)/python -m tl_med.stack down --workspace $(TL_MED_HOME)

clean:
	rm -rf $(VENV) tlmed-workspace .pytest_cache
