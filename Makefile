# Two commands on a fresh machine (Python 3.11):  `make demo`  and  `make test`.
PYTHON ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
LINKED  := $(VENV)/.linked
MODULES := $(VENV)/.modules
PACKAGES := seqops features models serving flows

.PHONY: demo test test-fast lint install clean FORCE

# Exact pinned stack (requirements/lock.txt; torch is the CPU build).
$(STAMP): requirements/lock.txt pyproject.toml
	@echo "installing the pinned stack into $(VENV) (log: $(VENV)/install.log) ..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip > $(VENV)/install.log 2>&1 || true
	@$(BIN)/python -m pip install -r requirements/lock.txt >> $(VENV)/install.log 2>&1 \
		|| (tail -40 $(VENV)/install.log; exit 1)
	@touch $(STAMP)

# seqops itself, editable in strict mode: a tree of links (build/__editable__.*) that IDEs and
# pyright follow. Links are per file, so adding or removing a module relinks (the module list changed).
$(MODULES): FORCE
	@mkdir -p $(VENV)
	@find $(PACKAGES) -name '*.py' -not -path '*/__pycache__/*' | sort > $(MODULES).new
	@cmp -s $(MODULES).new $(MODULES) && rm -f $(MODULES).new || mv $(MODULES).new $(MODULES)

$(LINKED): $(STAMP) $(MODULES)
	@$(BIN)/python -m pip install --no-deps -e . --config-settings editable_mode=strict >> $(VENV)/install.log 2>&1 \
		|| (tail -40 $(VENV)/install.log; exit 1)
	@touch $(LINKED)

install: $(LINKED)

demo: $(LINKED)
	@echo "POST /events asks for a bearer token when one is set: SEQOPS_API_TOKEN=\$$(openssl rand -hex 32) make demo (docs/security.md)"
	$(BIN)/seqops demo

# Two workers: most tests wait on subprocesses (dvc, feast, bentoml), so two run well on two cores.
test: $(LINKED)
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-fast: $(LINKED)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf .seqops
FORCE:
