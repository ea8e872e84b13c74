# SPDX-License-Identifier: GPL-2.0-or-later
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test lint typecheck unit demo bench install-user uninstall-user clean

setup:
	@scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check escd tests bench
	$(VENV)/bin/ruff format --check escd tests bench

typecheck: setup
	$(VENV)/bin/mypy --strict escd

test: lint typecheck
	$(PY) -m pytest -q $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/escd-sim demo $(DEMO_ARGS)

bench: setup
	$(PY) bench/idle.py
	$(PY) bench/enroll.py

install-user: setup
	scripts/install-user.sh

uninstall-user:
	scripts/install-user.sh --uninstall

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
