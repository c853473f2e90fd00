# syntax=docker/dockerfile:1
# Two images from one file (README, "Deployment (Docker)"):
#
#   docker build --target serve -t alexnet-serve .   # onnxruntime-gpu + FastAPI, no torch
#   docker build --target train -t alexnet-train .   # torch/torchvision for train/export
#
# Both sit on NVIDIA's CUDA 13 + cuDNN 9 runtime, which onnxruntime-gpu 1.31 is built
# for (torch's wheels bring their own CUDA libraries). Each final image copies a ready
# virtual environment from its build stage, so no pip cache or build tool stays in it.
ARG CUDA_IMAGE=nvidia/cuda:13.1.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- common base
FROM ${CUDA_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# Ubuntu 24.04's Python 3.12; versions follow the base image's release
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 alexnet \
    && useradd --uid 10001 --gid alexnet --create-home --shell /usr/sbin/nologin alexnet

# ---------------------------------------------------------------- serve: build the venv
FROM base AS serve-build
COPY requirements/serve.txt /tmp/requirements-serve.txt
RUN python3 -m venv /opt/venv \
    && pip install -r /tmp/requirements-serve.txt
COPY pyproject.toml README.md /src/
COPY core /src/core
COPY service /src/service
COPY alexnet /src/alexnet
# the project without `training` (no torch) and without dependencies: the pinned set above
# is all serving needs; `alexnet serve/index/reindex/models` run, training commands say so
RUN pip install --no-deps /src

# ---------------------------------------------------------------- serve: the image
FROM base AS serve
COPY --from=serve-build /opt/venv /opt/venv
RUN mkdir -p /data/model_store /data/gallery \
    && chown alexnet:alexnet /data/gallery
# ALEXNET_THREADS: onnxruntime's intra-op threads. In a container its default follows
# the host's cores, not the container's CPU limit: set it to that limit on CPU
# (e.g. --cpus 4 -> 4); on a GPU 1-2 are enough. For an int8 model on CPU under load,
# ALEXNET_INSTANCES=<cpus> with ALEXNET_THREADS=1 (one engine call per core) serves more,
# and a lone request waits longer (README, Settings).
ENV ALEXNET_HOST=0.0.0.0 \
    ALEXNET_PORT=8000 \
    ALEXNET_STORE=/data/model_store \
    ALEXNET_GALLERY=/data/gallery
WORKDIR /data
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "service.healthcheck"]
CMD ["alexnet", "serve"]

# ---------------------------------------------------------------- train: build the venv
FROM base AS train-build
COPY pyproject.toml README.md /src/
COPY core /src/core
COPY training /src/training
COPY service /src/service
COPY alexnet /src/alexnet
RUN python3 -m venv /opt/venv \
    && pip install "/src[train]"

# ---------------------------------------------------------------- train: the image
# alexnet train / export / quantize / plot / filters, also under torchrun:
#   docker run --gpus all --shm-size 8g -v $PWD:/work alexnet-train \
#       torchrun --standalone --nproc_per_node=4 -m alexnet train --data data/x ...
FROM base AS train
COPY --from=train-build /opt/venv /opt/venv
ENV MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /work
USER 10001:10001
CMD ["alexnet", "--help"]
