# sdc-orchestrator: the chat API. Carries Kiwi's Korean model (about 90 MB), no torch.
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md requirements/constraints.txt ./
COPY operator ./operator
COPY orchestrator ./orchestrator
COPY runtime ./runtime
RUN python -m venv /opt/sdc && /opt/sdc/bin/pip install --no-cache-dir -c constraints.txt ".[orchestrator]"

FROM python:3.11.14-slim-bookworm
COPY --from=build /opt/sdc /opt/sdc
ENV PATH=/opt/sdc/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["sdc-orchestrator", "--host", "0.0.0.0", "--port", "8080"]
