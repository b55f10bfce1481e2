# Two commands a newcomer needs: `make dev` and `make test`. Each bootstraps the
# virtualenvs on a fresh clone. The project venv uses python3.13 when present, because
# `sam build` checks for the runtime's own interpreter on PATH (the pyenv shim fails it).
SHELL := /bin/bash
PY313 := $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.13.*/bin/python3.13) $(shell command -v python3.13))
PYTHON ?= $(if $(PY313),$(PY313),python3)
VENV := .venv
TOOLS := .venv-tools
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

FUNCTION_REQS := $(wildcard functions/*/requirements.txt)

.PHONY: venv dev test lint migrate build validate clean fuzz openapi

$(VENV)/.installed: requirements-dev.txt layers/common/requirements.txt $(FUNCTION_REQS) pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements-dev.txt -r layers/common/requirements.txt $(addprefix -r ,$(FUNCTION_REQS)) 2> >(grep -v '^WARNING: Location' >&2)
	$(VENV)/bin/pip install -q --no-deps -e . 2> >(grep -v '^WARNING: Location' >&2)
	touch $@

$(TOOLS)/.installed: requirements-tools.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q -r requirements-tools.txt 2> >(grep -v '^WARNING: Location' >&2)
	touch $@

venv: $(VENV)/.installed $(TOOLS)/.installed

# PORT=4000 S3_PORT=4100 make dev (or make dev PORT=4000): the runner's and S3's ports.
dev: venv
	$(VENV)/bin/python scripts/dev.py $(if $(PORT),--port $(PORT)) $(if $(S3_PORT),--s3-port $(S3_PORT))

test: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(TOOLS)/bin/cfn-lint template.yaml

# Schemathesis against the client routes of a runner on a throw-away database (docs/local-dev.md).
fuzz: venv
	$(VENV)/bin/python scripts/fuzz $(FUZZ_ARGS)

# Regenerate shared/openapi/<function>.json from the resolvers (a test fails while they are stale).
openapi: venv
	$(VENV)/bin/python scripts/openapi

migrate: venv
	$(VENV)/bin/python scripts/migrate

validate: venv
	$(TOOLS)/bin/sam validate --lint --region us-east-1

build: venv
	$(TOOLS)/bin/sam build

clean:
	rm -rf $(VENV) $(TOOLS) .aws-sam .local
