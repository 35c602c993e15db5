# sdc-operator: the LocalLLM operator. Small (no web server, no torch), non-root, read-only friendly.
# Build from the repository root: docker build -f images/operator.Dockerfile -t sdc-operator .
# BASE_IMAGE: any Debian-like image with python3 (3.11+) and its venv module; `make images`
# passes a base made here from Debian's packages (no registry needed).
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

# The requirement list of this image's extra, alone: the dependency layer below is rebuilt when
# that list or the pins change, not whenever pyproject.toml does.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml images/requirements.py /src/
RUN python3 /src/requirements.py operator /src/pyproject.toml > /src/requirements.txt

FROM ${BASE_IMAGE}
ENV PATH=/opt/sdc/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, in a layer of their own: a code change reuses it.
COPY requirements/constraints.txt ./
COPY --from=requirements /src/requirements.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/sdc && /opt/sdc/bin/pip install -c constraints.txt -r requirements.txt
# A passwd entry for the runtime uid: without one, getpass/pwd lookups fail (Kopf's peering id,
# torch's cache paths).
RUN groupadd --gid 10001 sdc && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin sdc
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY orchestrator ./orchestrator
COPY runtime ./runtime
RUN --mount=type=cache,target=/root/.cache/pip /opt/sdc/bin/pip install --no-deps . && rm -rf /src/*
WORKDIR /
USER 10001:10001
ENTRYPOINT ["sdc-operator"]
