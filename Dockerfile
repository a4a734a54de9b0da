# syntax=docker/dockerfile:1
# Image of simtask-operator. Build from the repository root:
#   docker build -t simtask-operator:0.1.0 .
#
# The base is pinned to an exact Python patch release on Debian bookworm. Pin the digest
# too when you publish (python:3.12.12-slim-bookworm@sha256:...) so rebuilds are
# byte-for-byte reproducible.

# --- build: make the wheel, install it and its dependencies into a virtualenv ---------
FROM python:3.12.12-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
# Only what the wheel is made of (README.md is its long description: not needed here).
COPY pyproject.toml ./
COPY operator/ operator/

# The wheel is built by pip (PEP 517, setuptools from pyproject.toml); the virtualenv is
# made without pip, so the runtime image carries no installer.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
    && python -m venv --without-pip /opt/simtask \
    && pip --python /opt/simtask/bin/python install --no-cache-dir /dist/simtask_operator-*.whl

# --- runtime: the virtualenv only, as a non-root user -----------------------------------
FROM python:3.12.12-slim-bookworm

LABEL org.opencontainers.image.title="simtask-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs simulations as SimulationTask custom resources" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/simtask/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY --from=build /opt/simtask /opt/simtask

# 65532: the conventional "nonroot" UID; the chart runs the pod with the same IDs and a
# read-only root filesystem.
USER 65532:65532
WORKDIR /tmp

# 8000: Prometheus metrics (/metrics); 8080: health probe (/healthz).
EXPOSE 8000 8080

ENTRYPOINT ["simtask-operator"]
CMD ["--leader-elect"]
