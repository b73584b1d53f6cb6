# Two commands on a fresh machine: `make run` and `make test` (README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-requirements

.PHONY: run test clean clean-data

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Keeps var/pgdata, the embedded database's accounts and messages; `make clean-data` deletes it.
clean:
	rm -rf $(VENV) staticfiles .pytest_cache
	find var -mindepth 1 -maxdepth 1 ! -name pgdata -exec rm -rf {} + 2>/dev/null || true

# Asks first; without a terminal it refuses unless CONFIRM=yes.
clean-data:
	@if [ "$(CONFIRM)" != yes ]; then \
	  if [ ! -t 0 ]; then echo "clean-data: no terminal to ask; run make clean-data CONFIRM=yes" >&2; exit 1; fi; \
	  printf "Delete var/pgdata, the embedded database with every account and message? [y/N] "; \
	  read answer; case "$$answer" in y|Y|yes) ;; *) echo "kept var/pgdata"; exit 1;; esac; \
	fi
	rm -rf var/pgdata
