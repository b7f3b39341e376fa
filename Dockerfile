# syntax=docker/dockerfile:1
# The one image every FERD stage and Kubeflow component runs in. Build it with `make image`
# (image/build.sh: podman or docker, a local Debian base when no registry is reachable, the
# host's extra CA bundle as a build secret, build/image.json); publish with image/publish.sh.
# By hand:
#
#   docker build -t ghcr.io/ferd/ferd:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#                --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# BASE: any Debian bookworm image with python3 (3.11) and its venv module: the published build
# uses python:3.11-slim-bookworm; without a registry, image/build.sh makes one with mmdebstrap.
#
# PyTorch: the pinned torch wheel from PyPI is the CUDA build (its CUDA runtime, cuDNN and NCCL
# come as nvidia-* wheels), so a plain Python base image runs on GPU nodes; the node only
# needs the NVIDIA driver and container toolkit. Kubeflow runs a component as
# `sh -ec '… python3 -m kfp.dsl.executor_main …'`, overriding the entrypoint: kfp and ferd are
# both in the image's virtual environment, first on PATH.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_PROGRESS_BAR=off

# python3: /usr/local/bin/python3 on the python image, /usr/bin/python3 on Debian's
RUN python3 -m venv /opt/venv \
    && useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin ferd

WORKDIR /opt/ferd
# The pinned dependencies first, from pyproject.toml and constraints.txt alone (a stub package):
# this large layer (torch with CUDA) is rebuilt only when they change, not with every change of
# the code. The pip cache is a cache mount (with podman image/build.sh binds the host's cache
# there), so wheels are not fetched twice and never land in a layer; an extra CA bundle (a
# TLS-inspecting proxy) comes as the build secret `ca`, never stored in the image.
COPY pyproject.toml constraints.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && mkdir -p ferd && touch ferd/__init__.py README.md \
    && pip install --constraint constraints.txt '.[all]' 'setuptools>=77' 'wheel>=0.41' \
    && pip uninstall --yes ferd \
    && rm -rf ferd build ./*.egg-info README.md

# From here on pip keeps no cache (in the image or at run time).
ENV PIP_NO_CACHE_DIR=1

# The code: pyproject.toml's build requirements are in the venv already (no network needed).
COPY README.md ./
COPY ferd ./ferd
RUN pip install --no-cache-dir . --no-deps --no-build-isolation \
    && pip check \
    && rm -rf build ./*.egg-info

# Build metadata last, so a new revision or date rebuilds no layer above.
# FERD_GIT_COMMIT: the commit the image was built from, recorded in every stage manifest (lineage)
ARG REVISION=unknown
ARG CREATED=unknown
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ferd" \
      org.opencontainers.image.description="FERD: fairness-enhanced data-free adversarial robustness distillation (stages and Kubeflow components)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/ferd/ferd" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV FERD_GIT_COMMIT=${REVISION}

# uid 1000 (ferd in /etc/passwd: HOME /home/ferd, also the working directory)
USER 1000:1000
WORKDIR /home/ferd
ENTRYPOINT ["ferd"]
CMD ["--help"]
