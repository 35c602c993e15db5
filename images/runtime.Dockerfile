# sdc-runtime: the Transformers runtime, and sdc-fetch-model for the download init containers.
# torch from PyPI includes CUDA: the same image serves CPU and NVIDIA GPU nodes (about 6 GB, most
# of it CUDA libraries). torch sits in a layer of its own, below the code: a code change rebuilds
# and ships only the small top layer, and nodes keep the big one.
# Build from the repository root: docker build -f images/runtime.Dockerfile -t sdc-runtime .
# BASE_IMAGE: see images/operator.Dockerfile.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm
# RUNTIME_EXTRA=runtime-quant adds bitsandbytes, for LocalLLMs with engine.quantization int4/int8
# (CUDA only): docker build --build-arg RUNTIME_EXTRA=runtime-quant ..., then engine.image names it.
ARG RUNTIME_EXTRA=runtime

# The requirement list of this image's extra, alone: the dependency layer below is rebuilt when
# that list or the pins change, not whenever pyproject.toml does.
FROM ${BASE_IMAGE} AS requirements
ARG RUNTIME_EXTRA
COPY pyproject.toml images/requirements.py /src/
RUN python3 /src/requirements.py ${RUNTIME_EXTRA} /src/pyproject.toml > /src/requirements.txt

FROM ${BASE_IMAGE}
# PYTORCH_ALLOC_CONF (torch >= 2.9's name for PYTORCH_CUDA_ALLOC_CONF): expandable segments
# cut fragmentation when prompts of varying length come and go; ignored on CPU.
ENV PATH=/opt/sdc/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp HF_HUB_DISABLE_TELEMETRY=1 PYTORCH_ALLOC_CONF=expandable_segments:True
WORKDIR /src
# Dependencies first, in a layer of their own: a code change reuses it.
COPY requirements/constraints.txt ./
COPY --from=requirements /src/requirements.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/sdc && /opt/sdc/bin/pip install -c constraints.txt -r requirements.txt
# A passwd entry for the runtime uid: without one, getpass/pwd lookups fail (torch's cache paths).
RUN groupadd --gid 1000 sdc && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin sdc
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY orchestrator ./orchestrator
COPY runtime ./runtime
RUN --mount=type=cache,target=/root/.cache/pip /opt/sdc/bin/pip install --no-deps . && rm -rf /src/*
WORKDIR /
USER 1000:1000
EXPOSE 8000
ENTRYPOINT []
CMD ["sdc-runtime", "--help"]
