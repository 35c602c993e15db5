# ollama for CPU nodes without a registry: the binary `make ollama` builds from ollama's Go module
# (hack/ollama_build.py, version pinned in hack/tool-versions.env), on the same base as the other
# images. `make images` tags it as the operator's default Ollama image (ollama/ollama:<version>),
# so LocalLLMs on the local node run it unchanged. On a cluster with a registry, use the official
# ollama/ollama image instead: the same server, plus the GPU runners this CPU-only build lacks.
# BASE_IMAGE: see images/operator.Dockerfile.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm
FROM ${BASE_IMAGE}
COPY build/ollama/ollama /usr/local/bin/ollama
# Non-root with a writable HOME (ollama writes ~/.ollama/id_ed25519 on start); the operator's pods
# set HOME and OLLAMA_MODELS to their own volumes, these defaults serve a plain `docker run`.
ENV HOME=/tmp OLLAMA_HOST=0.0.0.0:11434 OLLAMA_MODELS=/tmp/ollama-models
USER 1000:1000
EXPOSE 11434
ENTRYPOINT ["/usr/local/bin/ollama"]
CMD ["serve"]
