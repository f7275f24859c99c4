# syntax=docker/dockerfile:1
# One kresume image, two entrypoints:
#   kresume-operator  (operator/entrypoint.sh -> `kresume operator`, the Deployment of charts/kresume)
#   kresume-sidecar   (sidecar/entrypoint.sh  -> `kresume sidecar`; the operator injects `kresume sidecar`/`restore`)
# Build: docker build -t ghcr.io/kresume/kresume:0.1.0 .
#   Without a registry (the local real node, scripts/build-images): the same file with buildah and
#   --build-arg PYTHON_IMAGE=<a local Debian base with python3, python3-venv, python3-pip, python-is-python3>
#   --build-arg BUILD_PACKAGES= (every dependency has an x86_64 wheel, so no toolchain is installed).
# Extras: s3, gcs, azure (fsspec backends). No torch: the sidecar judges checkpoints from their bytes.

# Base of both stages: any Debian bookworm image whose `python` is CPython 3.11 with venv and pip.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Debian packages of the builder stage: a C toolchain for any dependency without a wheel for the platform
# (e.g. arm64 builds); empty: none (no apt at all).
ARG BUILD_PACKAGES="build-essential=12.*"

# --- builder: wheels for kresume and every dependency (compilers live only here) --------------------------
FROM ${PYTHON_IMAGE} AS builder
ARG BUILD_PACKAGES
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# hadolint ignore=DL3008,SC2086
RUN if [ -n "$BUILD_PACKAGES" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends $BUILD_PACKAGES \
      && rm -rf /var/lib/apt/lists/*; \
    fi
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
