# syntax=docker/dockerfile:1
# The one image every FERD stage and Kubeflow component runs in.
#
#   docker build -t ghcr.io/ferd/ferd:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#                --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# PyTorch: the pinned torch wheel from PyPI is the CUDA build (its CUDA runtime, cuDNN and NCCL
# come as nvidia-* wheels), so a plain Python base image runs on GPU nodes; the node only
# needs the NVIDIA driver and container toolkit. Kubeflow runs a component as
# `sh -ec '… python3 -m kfp.dsl.executor_main …'`, overriding the entrypoint: kfp and ferd are
# both in the image's virtual environment, first on PATH.
FROM python:3.11-slim-bookworm

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

# FERD_GIT_COMMIT: the commit the image was built from, recorded in every stage manifest (lineage)
ENV VIRTUAL_ENV=/opt/venv \
    FERD_GIT_COMMIT=${REVISION} \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv

WORKDIR /opt/ferd
# The pinned dependencies first, from pyproject.toml alone: this large layer (torch with CUDA)
# is rebuilt only when the dependencies change, not with every change of the code.
COPY pyproject.toml README.md ./
RUN mkdir ferd && touch ferd/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall --yes ferd \
    && rm -rf ferd build

COPY ferd ./ferd
COPY params ./params
RUN pip install --no-cache-dir --no-deps . \
    && pip check \
    && rm -rf build

RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin ferd
USER 1000:1000
WORKDIR /home/ferd
ENTRYPOINT ["ferd"]
CMD ["--help"]
