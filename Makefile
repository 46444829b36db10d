# The two commands of the README. Each installs what it needs first, so both work
# on a fresh machine with Python 3.11+, Node.js/npm (and, for the tests, Debian's
# chromium, nginx and promtool, installed here when missing).
HOST ?= 127.0.0.1
PORT ?= 8000
NPM := npm ci --no-audit --no-fund --prefix

.PHONY: run test

run:
	python3 -m venv .venv
	.venv/bin/pip install -q -e .
	$(NPM) web
	.venv/bin/hub serve --host $(HOST) --port $(PORT)

test:
	python3 -m venv .venv
	.venv/bin/pip install -q -e '.[test]'
	$(NPM) tests/js
	$(NPM) web
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || (apt-get update -qq && apt-get install -y -qq nginx-light)
	command -v promtool >/dev/null || (apt-get update -qq && apt-get install -y -qq prometheus)
	.venv/bin/pytest
