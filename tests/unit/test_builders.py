"""Table-driven tests of the pure builders: spec + settings -> desired objects."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from sdc_operator.builders.common import MODEL_HASH, SPEC_HASH, LocalLLM
from sdc_operator.builders.service import service
from sdc_operator.builders.workload import deployment, desired_children, engine_parts, engine_port
from sdc_operator.plan import source_errors
from sdc_operator.settings import OperatorSettings
from sdc_operator.spec import LocalLLMSpec, semantic_errors

SETTINGS = OperatorSettings(metrics_port=0)
REV = "a" * 40


def make(spec: dict[str, Any], name: str = "m") -> LocalLLM:
    return LocalLLM(name, "ns", "uid-1", 1, LocalLLMSpec.model_validate(spec))


def vllm(**extra: Any) -> dict[str, Any]:
    return {
        "runtime": "vllm",
        "model": {"name": "google/gemma-2-9b-it", "revision": REV},
        "resources": {"gpus": 1},
        **extra,
    }


def containers(obj: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    pod = obj["spec"]["template"]["spec"]
    return pod["containers"][0], pod["initContainers"]


@pytest.mark.parametrize(
    ("case", "spec", "check"),
    [
        (
            "vllm one gpu: no tensor parallel flag",
            vllm(),
            lambda c, i, p: (
                "--tensor-parallel-size" not in c["args"] and c["resources"]["limits"]["nvidia.com/gpu"] == "1"
            ),
        ),
        (
            "vllm four gpus: tensor parallel 4",
            vllm(resources={"gpus": 4}),
            lambda c, i, p: c["args"][c["args"].index("--tensor-parallel-size") + 1] == "4",
        ),
        (
            "vllm served name defaults to the model",
            vllm(),
            lambda c, i, p: c["args"][c["args"].index("--served-model-name") + 1] == "google/gemma-2-9b-it",
        ),
        (
            "vllm has memory /dev/shm",
            vllm(),
            lambda c, i, p: any(v.get("emptyDir", {}).get("medium") == "Memory" for v in p["volumes"]),
        ),
        (
            "vllm startup probe tolerates 30 minutes",
            vllm(),
            lambda c, i, p: c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 1800,
        ),
        (
            "vllm serve with the pinned snapshot as its positional argument",
            vllm(),
            lambda c, i, p: (
                c["command"] == ["vllm", "serve"]
                and c["args"][0] == f"/models/hf/google/gemma-2-9b-it/{REV}"
                and "--model" not in c["args"]
            ),
        ),
        (
            "vllm as uid 1000: USER, HOME and the inductor cache are set and writable",
            vllm(),
            lambda c, i, p: (
                {"name": "USER", "value": "vllm"} in c["env"]
                and {"name": "HOME", "value": "/tmp"} in c["env"]
                and {"name": "TORCHINDUCTOR_CACHE_DIR", "value": "/tmp/torchinductor"} in c["env"]
                and {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
                and p["securityContext"]["runAsUser"] == 1000
            ),
        ),
        (
            "vllm probes: startup, readiness and liveness on /health",
            vllm(),
            lambda c, i, p: all(
                c[k]["httpGet"]["path"] == "/health" for k in ("startupProbe", "readinessProbe", "livenessProbe")
            ),
        ),
        (
            "vllm max model len and remote code",
            vllm(engine={"maxModelLen": 4096}, model={"name": "a/b", "revision": REV, "trustRemoteCode": True}),
            lambda c, i, p: (
                c["args"][c["args"].index("--max-model-len") + 1] == "4096" and "--trust-remote-code" in c["args"]
            ),
        ),
        (
            "download init pins the revision",
            vllm(),
            lambda c, i, p: i[0]["args"][i[0]["args"].index("--revision") + 1] == REV,
        ),
        (
            "download is safetensors-only by default",
            vllm(),
            lambda c, i, p: "--allow-pickle" not in i[0]["args"] and "--trust-remote-code" not in i[0]["args"],
        ),
        (
            "token comes from a secret",
            vllm(model={"name": "meta/llama", "revision": REV, "tokenSecretRef": {"name": "hf"}}),
            lambda c, i, p: any(
                e.get("valueFrom", {}).get("secretKeyRef") == {"name": "hf", "key": "token"} for e in i[0]["env"]
            ),
        ),
        (
            "gpu pods tolerate the gpu taint",
            vllm(),
            lambda c, i, p: {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in p["tolerations"],
        ),
        (
            "custom gpu resource name",
            vllm(resources={"gpus": 2, "gpuResourceName": "amd.com/gpu"}),
            lambda c, i, p: c["resources"]["limits"]["amd.com/gpu"] == "2",
        ),
        (
            "scheduling passes through",
            vllm(
                scheduling={"nodeSelector": {"pool": "a100"}, "runtimeClassName": "nvidia", "priorityClassName": "high"}
            ),
            lambda c, i, p: (
                p["nodeSelector"] == {"pool": "a100"}
                and p["runtimeClassName"] == "nvidia"
                and p["priorityClassName"] == "high"
            ),
        ),
        (
            "image override and extra args",
            vllm(engine={"image": "my/vllm:1", "args": ["--quantization=awq"]}),
            lambda c, i, p: c["image"] == "my/vllm:1" and c["args"][-1] == "--quantization=awq",
        ),
        (
            "an engine's log tail is its termination message (a CUDA out-of-memory reaches the status)",
            vllm(),
            lambda c, i, p: c["terminationMessagePolicy"] == "FallbackToLogsOnError",
        ),
        (
            "non-root and no token automount",
            vllm(),
            lambda c, i, p: (
                p["securityContext"]["runAsNonRoot"]
                and not p["automountServiceAccountToken"]
                and c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            ),
        ),
        (
            "cpu transformers has no gpu or toleration",
            {"runtime": "transformers", "model": {"name": "sdc/tiny", "revision": REV}},
            lambda c, i, p: (
                "limits" not in c["resources"] and "tolerations" not in p and c["command"] == ["sdc-runtime"]
            ),
        ),
        (
            "transformers passes remote code only when the spec asks",
            {"runtime": "transformers", "model": {"name": "sdc/tiny", "revision": REV, "trustRemoteCode": True}},
            lambda c, i, p: "--trust-remote-code" in c["args"],
        ),
        (
            "transformers serves engine.maxModelLen",
            {
                "runtime": "transformers",
                "model": {"name": "sdc/tiny", "revision": REV},
                "engine": {"maxModelLen": 2048},
            },
            lambda c, i, p: c["args"][c["args"].index("--max-model-len") + 1] == "2048",
        ),
        (
            "transformers serves the model's own context by default",
            {"runtime": "transformers", "model": {"name": "sdc/tiny", "revision": REV}},
            lambda c, i, p: "--max-model-len" not in c["args"],
        ),
        (
            "transformers keeps remote code off by default",
            {"runtime": "transformers", "model": {"name": "sdc/tiny", "revision": REV}},
            lambda c, i, p: "--trust-remote-code" not in c["args"],
        ),
        (
            "ollama pulls the tag in an init container",
            {"runtime": "ollama", "model": {"name": "gemma2:9b"}},
            lambda c, i, p: (
                [x["name"] for x in i] == ["model-download"]
                and {"name": "SDC_MODEL", "value": "gemma2:9b"} in i[0]["env"]
                and "SDC_MODEL_FILE" not in {e["name"] for e in i[0]["env"]}
                and c["readinessProbe"]["exec"]["command"] == ["ollama", "show", "gemma2:9b"]
            ),
        ),
        (
            "ollama serve gets no arguments",
            {"runtime": "ollama", "model": {"name": "gemma2:9b"}},
            lambda c, i, p: c["command"] == ["ollama"] and c["args"] == ["serve"],
        ),
        (
            "ollama listens on loopback: the private pull server, and the serving one behind its exporter",
            {"runtime": "ollama", "model": {"name": "gemma2:9b"}},
            lambda c, i, p: (
                {"name": "OLLAMA_HOST", "value": "127.0.0.1:11434"} in i[0]["env"]
                and [e["value"] for e in c["env"] if e["name"] == "OLLAMA_HOST"] == ["127.0.0.1:11435"]
                and "ports" not in c
                and c["livenessProbe"]["exec"]["command"] == ["ollama", "list"]
            ),
        ),
        (
            "ollama: a user's OLLAMA_HOST cannot open the private server (ours comes last)",
            {
                "runtime": "ollama",
                "model": {"name": "gemma2:9b"},
                "engine": {"env": [{"name": "OLLAMA_HOST", "value": "0.0.0.0:1"}]},
            },
            lambda c, i, p: [e["value"] for e in i[0]["env"] if e["name"] == "OLLAMA_HOST"][-1] == "127.0.0.1:11434",
        ),
        (
            "ollama as uid 1000: writable HOME and model store",
            {"runtime": "ollama", "model": {"name": "gemma2:9b"}},
            lambda c, i, p: (
                {"name": "HOME", "value": "/tmp"} in c["env"]
                and {"name": "HOME", "value": "/tmp"} in i[0]["env"]
                and {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
                and p["securityContext"]["fsGroup"] == 1000
                and all(x["securityContext"]["runAsNonRoot"] for x in [c, *i])
            ),
        ),
        (
            "ollama served name and parameters go to the Modelfile, sorted",
            {
                "runtime": "ollama",
                "model": {
                    "name": "gemma2:9b",
                    "servedName": "team/chat:v1",
                    "parameters": {"num_thread": "1", "stop": "<end>"},
                },
                "engine": {"maxModelLen": 2048},
            },
            lambda c, i, p: (
                {"name": "SDC_SERVED_NAME", "value": "team/chat:v1"} in i[0]["env"]
                and {
                    "name": "SDC_PARAMETERS",
                    "value": "PARAMETER num_ctx 2048\nPARAMETER num_thread 1\nPARAMETER stop <end>\n",
                }
                in i[0]["env"]
                and c["readinessProbe"]["exec"]["command"] == ["ollama", "show", "team/chat:v1"]
            ),
        ),
        (
            "ollama from a url: fetched by digest into the blob store, then imported",
            {
                "runtime": "ollama",
                "model": {"name": "tiny:1", "url": "http://files.sdc.svc/tiny.gguf", "sha256": "b" * 64},
            },
            lambda c, i, p: (
                [x["name"] for x in i] == ["model-fetch", "model-download"]
                and i[0]["command"] == ["sdc-fetch-url"]
                and i[0]["args"]
                == [
                    "--url",
                    "http://files.sdc.svc/tiny.gguf",
                    "--sha256",
                    "b" * 64,
                    "--dest",
                    f"/models/ollama/blobs/sha256-{'b' * 64}",
                ]
                and {"name": "SDC_MODEL_FILE", "value": f"/models/ollama/blobs/sha256-{'b' * 64}"} in i[1]["env"]
                and {"name": "OLLAMA_NOPRUNE", "value": "1"} in i[1]["env"]
            ),
        ),
        (
            "ollama keeps models on the cache",
            {"runtime": "ollama", "model": {"name": "gemma2:9b"}},
            lambda c, i, p: {"name": "OLLAMA_MODELS", "value": "/models/ollama"} in c["env"],
        ),
    ],
)
def test_deployment(case: str, spec: dict[str, Any], check: Any) -> None:
    obj = deployment(make(spec), SETTINGS)
    container, init = containers(obj)
    pod = obj["spec"]["template"]["spec"]
    assert check(container, init, pod), f"{case}; the pod spec built was:\n{json.dumps(pod, indent=1, sort_keys=True)}"


def cpu_vllm(**resources: Any) -> dict[str, Any]:
    return vllm(resources={"gpus": 0, **resources})


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


@pytest.mark.parametrize(
    ("case", "spec", "want"),
    [
        # memory request -> VLLM_CPU_KVCACHE_SPACE: half of what is left beyond 4 GiB, at least 1 GiB
        ("no requests", cpu_vllm(), {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": None}),
        ("6Gi, 2 cpus", cpu_vllm(memory="6Gi", cpu="2"), {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "2"}),
        ("16Gi, 7500m", cpu_vllm(memory="16Gi", cpu="7500m"), {"VLLM_CPU_KVCACHE_SPACE": "6", "OMP_NUM_THREADS": "7"}),
        ("decimal 32G", cpu_vllm(memory="32G"), {"VLLM_CPU_KVCACHE_SPACE": "12"}),
        (
            "under the baseline",
            cpu_vllm(memory="2Gi", cpu="500m"),
            {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"},
        ),
        # threads are never pinned to core ids other pods share
        ("no core binding", cpu_vllm(cpu="4"), {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}),
    ],
)
def test_cpu_vllm_env_from_the_spec(case: str, spec: dict[str, Any], want: dict[str, str | None]) -> None:
    container, _ = containers(deployment(make(spec), SETTINGS))
    env = env_of(container)
    for name, value in want.items():
        assert env.get(name) == value, f"{case}: {name}={env.get(name)!r}, want {value!r}"


def test_cpu_vllm_runs_the_cpu_image_without_gpus() -> None:
    obj = deployment(make(cpu_vllm(memory="8Gi", cpu="2")), SETTINGS)
    container, _ = containers(obj)
    pod = obj["spec"]["template"]["spec"]
    assert container["image"] == SETTINGS.vllm_cpu_image != SETTINGS.vllm_image
    assert container["command"] == ["vllm", "serve"]  # the same command line as on GPUs
    assert "--tensor-parallel-size" not in container["args"]
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    assert container["resources"]["limits"] == {"memory": "8Gi"}
    assert "tolerations" not in pod
    assert obj["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    gpu_container, _ = containers(deployment(make(vllm()), SETTINGS))
    assert gpu_container["image"] == SETTINGS.vllm_image
    assert "VLLM_CPU_KVCACHE_SPACE" not in env_of(gpu_container)


def test_cpu_vllm_engine_env_overrides_the_derived_values() -> None:
    env = [{"name": "VLLM_CPU_KVCACHE_SPACE", "value": "3"}, {"name": "OMP_NUM_THREADS", "value": "5"}]
    spec = {**cpu_vllm(memory="16Gi", cpu="2"), "engine": {"env": env}}
    container, _ = containers(deployment(make(spec), SETTINGS))
    names = [e["name"] for e in container["env"]]
    assert names.count("VLLM_CPU_KVCACHE_SPACE") == names.count("OMP_NUM_THREADS") == 1
    assert env_of(container)["VLLM_CPU_KVCACHE_SPACE"] == "3" and env_of(container)["OMP_NUM_THREADS"] == "5"


@pytest.mark.parametrize(
    "spec",
    [
        vllm(),
        {"runtime": "ollama", "model": {"name": "gemma2:9b"}},
        {"runtime": "transformers", "model": {"name": "sdc/tiny", "revision": REV}},
    ],
    ids=["vllm", "ollama", "transformers"],
)
def test_engine_port_is_the_port_the_pod_serves(spec: dict[str, Any]) -> None:
    llm = make(spec)
    assert engine_port(llm.spec.runtime) == engine_parts(llm, SETTINGS).port


def test_ollama_pod_serves_its_api_port_through_the_exporter() -> None:
    """The Service's named port is the exporter's; it forwards to ollama on loopback and knows its sequences."""
    spec = {
        "runtime": "ollama",
        "model": {"name": "gemma2:9b", "parameters": {"num_ctx": "4096"}},
        "engine": {"env": [{"name": "OLLAMA_NUM_PARALLEL", "value": "4"}, {"name": "OLLAMA_DEBUG", "value": "1"}]},
    }
    llm = make(spec)
    deployed = deployment(llm, SETTINGS)
    pod = deployed["spec"]["template"]["spec"]
    engine, exporter = pod["containers"]
    assert engine["name"] == "ollama" and exporter["name"] == "ollama-exporter"
    assert exporter["image"] == SETTINGS.fetcher_image and exporter["command"] == ["sdc-ollama-exporter"]
    assert exporter["args"][:4] == ["--listen", "0.0.0.0:11434", "--upstream", "127.0.0.1:11435"]
    assert exporter["ports"] == [{"name": "http", "containerPort": 11434, "protocol": "TCP"}]
    assert service(llm, engine_parts(llm, SETTINGS).port)["spec"]["ports"][0]["targetPort"] == "http"
    assert env_of(exporter) == {"OLLAMA_CONTEXT_LENGTH": "4096", "OLLAMA_NUM_PARALLEL": "4"}
    assert exporter["securityContext"]["runAsNonRoot"] and exporter["resources"]["limits"]["memory"] == "192Mi"
    assert deployed["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "11434"


def test_children_are_owned_and_hashed() -> None:
    children = desired_children(make(vllm()), SETTINGS)
    assert [c["kind"] for c in children] == ["PersistentVolumeClaim", "Deployment", "Service"]
    for child in children:
        assert child["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        assert SPEC_HASH in child["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("case", "cache", "kinds", "owned"),
    [
        ("default: claim deleted with the model", {}, ["PersistentVolumeClaim", "Deployment", "Service"], True),
        (
            "retain: claim not owned",
            {"deletePolicy": "Retain"},
            ["PersistentVolumeClaim", "Deployment", "Service"],
            False,
        ),
        ("existing claim: none built", {"existingClaim": "shared"}, ["Deployment", "Service"], None),
    ],
)
def test_cache_policy(case: str, cache: dict[str, Any], kinds: list[str], owned: bool | None) -> None:
    children = desired_children(make(vllm(cache=cache)), SETTINGS)
    assert [c["kind"] for c in children] == kinds, case
    if owned is not None:
        assert ("ownerReferences" in children[0]["metadata"]) is owned, case
    claim = deployment(make(vllm(cache=cache)), SETTINGS)["spec"]["template"]["spec"]["volumes"][0]
    assert claim["persistentVolumeClaim"]["claimName"] == cache.get("existingClaim", "m-model-cache")


def test_builders_do_not_mutate_input() -> None:
    llm = make(vllm(engine={"args": ["--x"]}))
    before = copy.deepcopy(llm.spec.model_dump())
    desired_children(llm, SETTINGS)
    assert llm.spec.model_dump() == before


def test_model_hash_changes_only_with_the_model() -> None:
    base = deployment(make(vllm()), SETTINGS)["metadata"]["annotations"][MODEL_HASH]
    scaled = deployment(make(vllm(replicas=3, cache={"accessMode": "ReadWriteMany"})), SETTINGS)
    other = deployment(make(vllm(model={"name": "google/gemma-2-9b-it", "revision": "b" * 40})), SETTINGS)
    assert scaled["metadata"]["annotations"][MODEL_HASH] == base
    assert other["metadata"]["annotations"][MODEL_HASH] != base


@pytest.mark.parametrize(
    ("case", "spec", "fragment"),
    [
        (
            "ollama serve takes no arguments",
            {"runtime": "ollama", "model": {"name": "a:b"}, "engine": {"args": ["-v"]}},
            "takes no arguments",
        ),
        ("operator-owned flag in args", vllm(engine={"args": ["--port=9"]}), "--port is set by the operator"),
        *(
            (f"cpu vllm refuses {q}", {**cpu_vllm(), "engine": {"quantization": q}}, "vllm on CPU")
            for q in ("fp8", "bitsandbytes")
        ),
    ],
)
def test_semantic_errors(case: str, spec: dict[str, Any], fragment: str) -> None:
    assert any(fragment in e for e in semantic_errors(LocalLLMSpec.model_validate(spec))), case


@pytest.mark.parametrize("quantization", [None, "awq", "gptq"])
def test_cpu_vllm_admits_what_its_kernels_load(quantization: str | None) -> None:
    spec = {**cpu_vllm(), "engine": {"quantization": quantization} if quantization else {}}
    assert semantic_errors(LocalLLMSpec.model_validate(spec)) == []


def test_tensor_parallel_is_not_a_power_of_two_rule() -> None:
    """vLLM's rule is heads divisible by the size (checked where the config is known), not powers of two."""
    assert semantic_errors(LocalLLMSpec.model_validate(vllm(resources={"gpus": 3}))) == []


def test_allow_list() -> None:
    strict = OperatorSettings(allowed_sources=["google/*"], allowed_ollama_models=["gemma2:*"])
    assert source_errors(LocalLLMSpec.model_validate(vllm()), strict) == []
    other = LocalLLMSpec.model_validate(vllm(model={"name": "evil/model", "revision": REV}))
    assert "not an allowed source" in source_errors(other, strict)[0]
    ollama = LocalLLMSpec.model_validate({"runtime": "ollama", "model": {"name": "llama3:8b"}})
    assert source_errors(ollama, strict)


@pytest.mark.parametrize(
    ("drain", "want_hook", "want_grace"),
    [
        (None, {"preStop": {"sleep": {"seconds": 10}}}, 70),  # the default
        (0, None, 60),  # turned off: SIGTERM at once, the in-flight time kept
        (25, {"preStop": {"sleep": {"seconds": 25}}}, 85),
    ],
)
def test_engine_pods_drain_before_they_stop(drain: int | None, want_hook: Any, want_grace: int) -> None:
    """Scale-down (#24): the engine keeps serving while it leaves the endpoints; the grace period covers the
    pause and the requests still running after SIGTERM. Every runtime alike."""
    settings = SETTINGS if drain is None else OperatorSettings(engine_drain_seconds=drain)
    for spec in (vllm(), cpu_vllm(memory="8Gi", cpu="2"), {"runtime": "transformers", "model": {"name": "sdc/tiny"}}):
        pod = deployment(make(spec), settings)["spec"]["template"]["spec"]
        container, _ = containers(deployment(make(spec), settings))
        assert container.get("lifecycle") == want_hook, spec
        assert pod["terminationGracePeriodSeconds"] == want_grace


@pytest.mark.parametrize(("drain", "engine_pause", "exporter_pause"), [(None, 60, 10), (0, None, None), (25, 75, 25)])
def test_ollama_outlives_its_exporters_drain(
    drain: int | None, engine_pause: int | None, exporter_pause: int | None
) -> None:
    """`ollama serve` drops its connections at SIGTERM: the exporter (which takes the traffic) gets the common
    pause and then drains for up to 45 s; ollama is stopped only after that, within the grace period."""
    settings = SETTINGS if drain is None else OperatorSettings(engine_drain_seconds=drain)
    pod = deployment(make({"runtime": "ollama", "model": {"name": "gemma2:9b"}}), settings)["spec"]["template"]["spec"]
    engine, exporter = pod["containers"]

    def pause(container: dict[str, Any]) -> int | None:
        hook = container.get("lifecycle")
        return None if hook is None else int(hook["preStop"]["sleep"]["seconds"])

    assert (pause(engine), pause(exporter)) == (engine_pause, exporter_pause)
    drain_s = float(exporter["args"][exporter["args"].index("--drain-timeout") + 1])
    if drain != 0:  # the exporter has drained before ollama gets its SIGTERM
        assert (exporter_pause or 0) + drain_s <= (engine_pause or 0)
    assert (engine_pause or 0) < pod["terminationGracePeriodSeconds"]
