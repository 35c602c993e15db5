# sdc-runtime: the Transformers runtime, and sdc-fetch-model for the download init containers.
# torch from PyPI includes CUDA: the same image serves CPU and NVIDIA GPU nodes.
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md requirements/constraints.txt ./
COPY operator ./operator
COPY orchestrator ./orchestrator
COPY runtime ./runtime
RUN python -m venv /opt/sdc && /opt/sdc/bin/pip install --no-cache-dir -c constraints.txt ".[runtime]"

FROM python:3.11.14-slim-bookworm
COPY --from=build /opt/sdc /opt/sdc
ENV PATH=/opt/sdc/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp HF_HUB_DISABLE_TELEMETRY=1
USER 1000:1000
EXPOSE 8000
ENTRYPOINT []
CMD ["sdc-runtime", "--help"]
