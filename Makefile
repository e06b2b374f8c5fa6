# mPanel: `make run` starts the panel with this machine reporting to it; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-unit test-integration screenshots venv clean

run: $(STAMP)
	$(PY) -m panel run-local

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

# Refresh the README's pictures from the browser test's full-page screenshots.
screenshots: $(STAMP)
	$(PY) -m pytest tests/integration/test_browser.py tests/integration/test_browser_customers.py \
	  tests/integration/test_browser_forecasts.py \
	  -k "(admin_adds or customer_user or customer_admin_turns or customer_admin_logs_in or mount_fills) and sqlite" $(PYTEST_ARGS)
	mkdir -p docs/screenshots
	cp tests/artifacts/servers-page.png tests/artifacts/server-detail.png \
	  tests/artifacts/customer-servers.png tests/artifacts/customer-status.png \
	  tests/artifacts/customer-channels.png tests/artifacts/forecast.png docs/screenshots/

venv: $(STAMP)

# Reinstall whenever a requirements file or this recipe changes.
$(STAMP): requirements.txt requirements-agent.txt requirements-optional.txt requirements-dev.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	# The agent is also tested with urllib3 1.26, which Debian 12, Ubuntu 22.04 and RHEL 9 ship.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
		--target $(VENV)/urllib3-1.26 'urllib3==1.26.12' 2>&1 | grep -v 'dependency' || true
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache
