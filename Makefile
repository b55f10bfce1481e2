# Two commands a newcomer needs: `make dev` and `make test`. Each bootstraps what it needs on
# a fresh clone: `make dev` the project's virtualenv only, `make test` also the tools one
# (SAM CLI, cfn-lint, checkov). Both install exactly the committed locks with uv (README
# "Dependencies"); `make lock` regenerates the locks from the *.in files.
# The venvs use python3.13 when present: the Lambda runtime's version, the locks' target.
SHELL := /bin/bash
PY313 := $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.13.*/bin/python3.13) $(shell command -v python3.13))
PYTHON ?= $(if $(PY313),$(PY313),python3)
VENV := .venv
TOOLS := .venv-tools
UV := $(VENV)/bin/uv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv tools dev test lint typecheck lock migrate build validate clean fuzz openapi

# uv itself, at the version requirements-dev.txt pins and checked against its hashes, put
# into the project venv by the interpreter's own pip (`pip --python`, pip >= 22.3). The
# venv is made without pip: ensurepip alone takes longer than everything uv does after.
$(UV): requirements-dev.txt
	@echo "==> $(VENV): uv, the installer (pinned in requirements-dev.txt)"
	test -x $(VENV)/bin/python || $(PYTHON) -m venv --without-pip $(VENV)
	awk '/^uv==/ {keep=1; print; next} keep && /^ / {print; next} {keep=0}' requirements-dev.txt > $(VENV)/uv.lock.txt
	$(PYTHON) -m pip --python $(VENV)/bin/python install --quiet --no-deps --require-hashes \
		-r $(VENV)/uv.lock.txt 2> >(grep -v '^WARNING: Location' >&2)
	touch $@

# The project venv: exactly requirements-dev.txt (sync removes anything else), which holds
# the layer's and every function's locked versions, the dev tools and the project itself
# (editable: `common` and `devkit`).
$(VENV)/.installed: requirements-dev.txt pyproject.toml $(UV)
	@echo "==> $(VENV): the locked packages of requirements-dev.txt"
	$(UV) pip sync --python $(VENV)/bin/python requirements-dev.txt
	touch $@

$(TOOLS)/.installed: requirements-tools.txt $(UV)
	@echo "==> $(TOOLS): SAM CLI and cfn-lint (requirements-tools.txt)"
	test -x $(TOOLS)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(TOOLS)
	$(UV) pip sync --python $(TOOLS)/bin/python requirements-tools.txt
	touch $@

venv: $(VENV)/.installed
tools: $(TOOLS)/.installed

# PORT=4000 S3_PORT=4100 make dev (or make dev PORT=4000): the runner's and S3's ports.
dev: $(VENV)/.installed
	$(VENV)/bin/python scripts/dev.py $(if $(PORT),--port $(PORT)) $(if $(S3_PORT),--s3-port $(S3_PORT))

test: $(VENV)/.installed $(TOOLS)/.installed
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory typecheck
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# cfn-lint and checkov on template.yaml; checkov's skipped checks, each with its reason, are
# in .checkov.yaml (and one resource's Metadata).
lint: $(VENV)/.installed $(TOOLS)/.installed
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory typecheck
	$(TOOLS)/bin/cfn-lint template.yaml
	$(TOOLS)/bin/checkov --config-file .checkov.yaml

# mypy, strict, on the layer's package and every function ([tool.mypy] in pyproject.toml).
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# Regenerate every lock from its *.in (scripts/lock); UPGRADE="name ..." lets those move to
# their newest versions allowed by the inputs and [tool.uv] exclude-newer (pyproject.toml).
lock: $(UV)
	UV=$(UV) $(VENV)/bin/python scripts/lock $(addprefix --upgrade-package ,$(UPGRADE))

# Schemathesis against the client routes of a runner on a throw-away database (docs/local-dev.md).
fuzz: $(VENV)/.installed
	$(VENV)/bin/python scripts/fuzz $(FUZZ_ARGS)

# Regenerate shared/openapi/<function>.json from the resolvers (a test fails while they are stale).
openapi: $(VENV)/.installed
	$(VENV)/bin/python scripts/openapi

migrate: $(VENV)/.installed
	$(VENV)/bin/python scripts/migrate

validate: $(TOOLS)/.installed
	$(TOOLS)/bin/sam validate --lint --region us-east-1

# sam runs scripts/build/Makefile per deployable, which installs its lock with .venv's uv.
build: $(VENV)/.installed $(TOOLS)/.installed
	$(TOOLS)/bin/sam build

clean:
	rm -rf $(VENV) $(TOOLS) .aws-sam .local
