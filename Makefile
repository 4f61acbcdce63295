# One place for every command a developer or CI runs. `make demo` and `make test` are the two that matter.
#   make test       ruff, mypy, then every test, one at a time (six to seven minutes on two cores)
#   make test-unit  ruff, then the tests marked unit (no servers) over all cores: under 20 s; run it on every change.
#                   A new test file is unit unless its top says `pytestmark = pytest.mark.e2e` (or slow); keep each
#                   unit test under ~0.5 s: `.venv/bin/python -m pytest -q -m unit --durations=15` names the slow ones
#   make typecheck  mypy over hooks/, drain/, nodejobs/ and emulator/ (config in pyproject.toml)
#   make image      build the hook image (docker, podman or buildah, whichever is installed), tagged hooks.__version__
#   make lock       refresh requirements.lock (hashed, every transitive pin) from requirements.txt with pip-compile
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: venv test test-unit lint typecheck run demo chaos bench simulator clean image lock

# The image: its name is the one kubernetes/deploy names, its tag is hooks.__version__ (the one version source).
IMAGE ?= ghcr.io/metal-machine-hooks/metal-machine-hooks
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' hooks/__init__.py)
# The first container builder on PATH; BUILDER=podman (or a full path) chooses one.
BUILDER ?= $(firstword $(foreach tool,docker podman buildah,$(shell command -v $(tool) 2>/dev/null)))

venv: $(STAMP)

# Reinstall only when a requirements file changed; `make venv` on an up-to-date tree costs nothing.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy hooks drain nodejobs emulator

test: lint typecheck
	$(BIN)/python -m pytest -q

# Bytecode (and pytest's rewritten test modules) is cached even where the shell turns that off: it is a third of a
# unit run's CPU. __pycache__ is ignored by git.
test-unit: lint
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -q -m unit -n auto

# A local run without HOOK_AUTH_TOKEN turns hook authentication off explicitly (the server fails closed otherwise).
run: venv
	BIND="$${BIND:-$(HOST):$(PORT)}" HOOK_AUTH_DISABLED="$${HOOK_AUTH_DISABLED:-$$([ -n "$$HOOK_AUTH_TOKEN" ] && echo false || echo true)}" \
		$(BIN)/gunicorn -c gunicorn.conf.py "hooks.app:create_app()"

simulator: venv
	$(BIN)/python -m emulator.metal --host $(HOST) --port 8090 --token demo-token --project 7f3c1a52-5d7e-4b8a-9c1d-2e3f4a5b6c7d

demo: venv
	$(BIN)/python -m emulator.demo $(DEMO_ARGS)

chaos: venv
	$(BIN)/python -m bench.chaos --machines 200 --doc docs/reliability.md

bench: venv
	$(BIN)/python -m bench.run

image:
	@if [ -z "$(BUILDER)" ]; then \
		echo "make image: no container builder found on PATH: install docker, podman or buildah, or set BUILDER=<tool>" >&2; \
		exit 1; \
	fi
	@if [ -z "$(VERSION)" ]; then echo "make image: no __version__ in hooks/__init__.py" >&2; exit 1; fi
	$(BUILDER) build --label org.opencontainers.image.version=$(VERSION) -t $(IMAGE):$(VERSION) .

# Every runtime package the image installs, pinned with its hashes (the Dockerfile installs with --require-hashes).
lock: venv
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file requirements.lock requirements.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info
