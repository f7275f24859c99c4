# syntax=docker/dockerfile:1
# One kresume image, two entrypoints:
#   kresume-operator  (operator/entrypoint.sh -> `kresume operator`, the Deployment of charts/kresume)
#   kresume-sidecar   (sidecar/entrypoint.sh  -> `kresume sidecar`; the operator injects `kresume sidecar`/`restore`)
# Build: docker build -t ghcr.io/kresume/kresume:0.1.0 .
# Extras: s3, gcs, azure (fsspec backends). No torch: the sidecar judges checkpoints from their bytes.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: wheels for kresume and every dependency (compilers live only here) --------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# A C toolchain for any dependency without a wheel for this platform (e.g. arm64 builds).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential=12.* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --wheel-dir /wheels ".[s3,gcs,azure]"

# --- runtime: slim Python, a venv installed from the wheels only, non-root --------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/kresume \
    PATH=/opt/kresume/bin:$PATH \
    HOME=/tmp
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/kresume \
 && /opt/kresume/bin/pip install --no-index --find-links=/wheels "kresume[s3,gcs,azure]" \
 && /opt/kresume/bin/pip uninstall -y pip \
 && kresume --help > /dev/null
COPY --chmod=0755 operator/entrypoint.sh /usr/local/bin/kresume-operator
COPY --chmod=0755 sidecar/entrypoint.sh /usr/local/bin/kresume-sidecar
# 65532 = the "nonroot" user of distroless images; the chart's securityContext uses the same ids.
USER 65532:65532
WORKDIR /tmp
# Operator webhook (HTTPS), liveness (/healthz), metrics (/metrics).
EXPOSE 9443 8080 9090
ENTRYPOINT ["kresume-operator"]
