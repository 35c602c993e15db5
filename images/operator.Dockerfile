# sdc-operator: the LocalLLM operator. Small (no web server, no torch), non-root, read-only friendly.
# Build from the repository root: docker build -f images/operator.Dockerfile -t sdc-operator .
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md requirements/constraints.txt ./
COPY operator ./operator
COPY orchestrator ./orchestrator
COPY runtime ./runtime
RUN python -m venv /opt/sdc && /opt/sdc/bin/pip install --no-cache-dir -c constraints.txt ".[operator]"

FROM python:3.11.14-slim-bookworm
COPY --from=build /opt/sdc /opt/sdc
ENV PATH=/opt/sdc/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["sdc-operator"]
