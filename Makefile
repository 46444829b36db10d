# The two commands of the README. Each installs what it needs first, so both work
# on a fresh machine with Python 3.11+, Node.js/npm (and, for the tests, Debian's
# chromium, nginx and promtool, installed here when missing).
HOST ?= 127.0.0.1
PORT ?= 8000
# Exact versions with hashes (requirements*.lock, from pyproject.toml by `make lock`);
# install scripts off: no package runs code (or phones home) at install time.
PIP_LOCKED = .venv/bin/pip install -q --require-hashes -r
NPM := npm ci --no-audit --no-fund --ignore-scripts --prefix

.PHONY: run test lock

run:
	python3 -m venv .venv
	$(PIP_LOCKED) requirements.lock
	.venv/bin/pip install -q --no-deps -e .
	$(NPM) web
	.venv/bin/hub serve --host $(HOST) --port $(PORT)

test:
	python3 -m venv .venv
	$(PIP_LOCKED) requirements-test.lock
	.venv/bin/pip install -q --no-deps -e .
	$(NPM) tests/js
	$(NPM) web
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || (apt-get update -qq && apt-get install -y -qq nginx-light)
	command -v promtool >/dev/null || (apt-get update -qq && apt-get install -y -qq prometheus)
	.venv/bin/pytest

# Re-pin every Python dependency (after editing pyproject.toml's dependencies).
COMPILE = .venv-lock/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-find-links --no-emit-index-url
lock:
	python3 -m venv .venv-lock
	.venv-lock/bin/pip install -q pip-tools
	$(COMPILE) -o requirements.lock pyproject.toml
	$(COMPILE) --extra test -o requirements-test.lock pyproject.toml
