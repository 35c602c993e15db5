"""Table tests of the handler decisions: ownership, drift, the plan, status patches, retries, policy.

Each case compares whole values with `==`, so a failure prints pytest's diff of
what was expected against what came out.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import re
from collections.abc import Hashable
from typing import Any

import pytest
from sdc_operator.backoff import namespace_terminating, repair_delay, retry_after, retry_delay
from sdc_operator.builders.common import LocalLLM
from sdc_operator.builders.workload import desired_children
from sdc_operator.debounce import Debouncer, run_delay
from sdc_operator.peering import outranked, priority_clash
from sdc_operator.plan import REPLICA_MANAGERS, drift, list_replacements, manually_deleted, owns, plan, yield_fields
from sdc_operator.policy import policy_errors
from sdc_operator.settings import OperatorSettings
from sdc_operator.spec import (
    ARGS_SHAPE_PATTERN,
    FORBIDDEN_ARG_PATTERN,
    LocalLLMSpec,
    parse_quantity,
    positional_args,
    semantic_errors,
)
from sdc_operator.status import status_patch
from sdc_operator.triggers import event_due, spec_pending

SETTINGS = OperatorSettings(metrics_port=0)
UID = "uid-1"
REV = "a" * 40


def llm(**spec: Any) -> LocalLLM:
    body = {"runtime": "transformers", "model": {"name": "sdc/tiny", "revision": REV}, **spec}
    return LocalLLM("m", "ns", UID, 1, LocalLLMSpec.model_validate(body))


def child(kind: str, name: str = "m", *, uid: str | None = UID, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"{kind}-uid", "labels": labels or {}}
    if uid is not None:
        meta["ownerReferences"] = [{"uid": uid, "controller": True, "kind": "LocalLLM", "name": "m"}]
    return {"kind": kind, "metadata": meta, "spec": {}}


OWNED_LABELS = {"app.kubernetes.io/managed-by": "sdc-operator", "llm.sdc.dev/localllm": "m"}


@pytest.mark.parametrize(
    ("case", "obj", "want"),
    [
        ("owner reference with our UID", child("Service"), True),
        ("owner reference of another LocalLLM (same name, older UID)", child("Service", uid="uid-0"), False),
        ("no owner reference: a foreign Service", child("Service", uid=None), False),
        ("foreign Service that copied our labels", child("Service", uid=None, labels=OWNED_LABELS), False),
        ("retained cache claim with our labels", child("PersistentVolumeClaim", uid=None, labels=OWNED_LABELS), True),
        (
            "claim with our labels for another name",
            child("PersistentVolumeClaim", uid=None, labels={**OWNED_LABELS, "llm.sdc.dev/localllm": "x"}),
            False,
        ),
        ("claim without the operator's labels", child("PersistentVolumeClaim", uid=None), False),
    ],
)
def test_owns(case: str, obj: dict[str, Any], want: bool) -> None:
    assert (case, owns(obj, UID, "m")) == (case, want)


def observed_from(desired: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """What the API server would show for exactly these objects: UIDs and defaults added."""
    out = {}
    for obj in copy.deepcopy(desired):
        obj["metadata"]["uid"] = f"{obj['kind']}-uid"
        obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"  # another manager's
        obj["spec"]["defaulted"] = True
        out[(obj["kind"], obj["metadata"]["name"])] = obj
    return out


def test_plan_cases() -> None:
    desired = desired_children(llm(), SETTINGS)
    converged = observed_from(desired)
    kinds = sorted(o["kind"] for o in desired)

    def summary(p: Any) -> tuple[list[tuple[str, str, str | None]], list[str]]:
        return sorted((a.obj["kind"], a.reason.split(":")[0], a.uid) for a in p.applies), p.conflicts

    cases: dict[str, tuple[dict[tuple[str, str], dict[str, Any]], Any]] = {}
    cases["nothing observed: create all"] = ({}, ([(k, "missing", None) for k in kinds], []))
    cases["converged: nothing to do"] = (converged, ([], []))
    edited = copy.deepcopy(converged)
    edited[("Deployment", "m")]["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    cases["image edited by hand: apply with the UID precondition"] = (
        edited,
        ([("Deployment", "changed", "Deployment-uid")], []),
    )
    foreign = copy.deepcopy(converged)
    del foreign[("Service", "m")]["metadata"]["ownerReferences"]
    cases["foreign Service of that name: conflict, nothing applied"] = (foreign, ([], ["Service/m"]))
    for case, (observed, want) in cases.items():
        assert (case, summary(plan(desired, observed, uid=UID, name="m"))) == (case, want)


def test_plan_reports_the_paths_that_drifted() -> None:
    desired = desired_children(llm(), SETTINGS)
    observed = observed_from(desired)
    observed[("Service", "m")]["spec"]["ports"][0]["port"] = 9999
    (action,) = plan(desired, observed, uid=UID, name="m").applies
    assert action.reason == "changed: .spec.ports[http].port"


@pytest.mark.parametrize(
    ("case", "want", "have", "paths"),
    [
        ("equal", {"a": 1}, {"a": 1}, []),
        ("extra observed fields are fine", {"a": 1}, {"a": 1, "b": 2}, []),
        ("scalar changed", {"a": {"b": "x"}}, {"a": {"b": "y"}}, [".a.b"]),
        ("missing field", {"a": 1}, {}, [".a"]),
        ("canonical quantity", {"cpu": "0.5"}, {"cpu": "500m"}, []),
        ("different quantity", {"cpu": "1"}, {"cpu": "500m"}, [".cpu"]),
        ("omitted empty value", {"value": "", "items": []}, {}, []),
        ("args are ordered", {"args": ["a", "b"]}, {"args": ["b", "a"]}, [".args[0]", ".args[1]"]),
        ("arg added by hand", {"args": ["a"]}, {"args": ["a", "b"]}, [".args"]),
        (
            "named list matched by name",
            {"env": [{"name": "A", "value": "1"}]},
            {"env": [{"name": "B"}, {"name": "A", "value": "1"}]},
            [],
        ),
        (
            "named item edited",
            {"env": [{"name": "A", "value": "1"}]},
            {"env": [{"name": "A", "value": "2"}]},
            [".env[A].value"],
        ),
        (
            "owner references by UID",
            {"ownerReferences": [{"uid": "u"}]},
            {"ownerReferences": [{"uid": "x"}, {"uid": "u"}]},
            [],
        ),
    ],
)
def test_drift(case: str, want: Any, have: Any, paths: list[str]) -> None:
    assert (case, drift(want, have)) == (case, paths)


@pytest.mark.parametrize(
    ("case", "managers", "keeps_replicas"),
    [
        ("only the operator owns replicas", ["sdc-operator"], True),
        ("an HPA (kube-controller-manager) owns replicas", ["sdc-operator", "kube-controller-manager"], False),
        ("a person scaled by hand (kubectl)", ["kubectl-scale"], True),
    ],
)
def test_yield_fields(case: str, managers: list[str], keeps_replicas: bool) -> None:
    dep = next(o for o in desired_children(llm(), SETTINGS) if o["kind"] == "Deployment")
    observed = {**dep, REPLICA_MANAGERS: managers}
    out = yield_fields(dep, observed, SETTINGS.yield_fields_to)
    assert (case, "replicas" in out["spec"]) == (case, keeps_replicas)
    assert "replicas" in dep["spec"], "the input is never changed"


@pytest.mark.parametrize(
    ("case", "current", "new", "patch"),
    [
        ("same: no write", {"phase": "Ready"}, {"phase": "Ready"}, None),
        (
            "endpoint withdrawn: sent as null",
            {"phase": "Ready", "endpoint": "http://x/v1"},
            {"phase": "Failed"},
            {"phase": "Failed", "endpoint": None},
        ),
        ("stale unknown key removed", {"phase": "Ready", "old": 1}, {"phase": "Ready"}, {"old": None}),
        (
            "only what changed",
            {"phase": "Pending", "replicas": 1},
            {"phase": "Ready", "replicas": 1},
            {"phase": "Ready"},
        ),
    ],
)
def test_status_patch(case: str, current: dict[str, Any], new: dict[str, Any], patch: Any) -> None:
    assert (case, status_patch(current, new)) == (case, patch)


@pytest.mark.parametrize(
    ("status", "delay"),
    [(0, 5.0), (500, 5.0), (503, 5.0), (429, 5.0), (409, 1.0), (422, 60.0), (403, 60.0), (400, 60.0)],
)
def test_retry_delay_never_gives_up(status: int, delay: float) -> None:
    assert (status, retry_delay(status)) == (status, delay)


@pytest.mark.parametrize(
    ("phase", "last", "due"),
    [
        ("Ready", "Starting", True),
        ("Ready", None, True),
        ("Ready", "Ready", False),
        ("Failed", "Pending", True),
        ("Degraded", "Ready", True),
        ("Starting", "Downloading", False),  # a step: the status message shows it
        ("Pending", "Ready", False),
    ],
)
def test_events_are_posted_for_outcomes_only(phase: str, last: str | None, due: bool) -> None:
    assert ((phase, last), event_due(phase, last)) == ((phase, last), due)


@pytest.mark.parametrize(
    ("status", "message", "terminating"),
    [
        (
            403,
            'persistentvolumeclaims "m-model-cache" is forbidden: unable to create new content in namespace t '
            "because it is being terminated",
            True,
        ),
        (403, 'deployments.apps "m" is forbidden: exceeded quota: no-deployments', False),
        (409, "because it is being terminated", False),
    ],
)
def test_repairs_in_a_terminating_namespace_are_dropped(status: int, message: str, terminating: bool) -> None:
    assert (message, namespace_terminating(status, message)) == (message, terminating)


def test_failed_repairs_back_off_to_the_repair_bound_and_never_stop() -> None:
    delays = [repair_delay(attempt) for attempt in range(1, 10)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


@pytest.mark.parametrize(
    ("case", "obj", "want"),
    [
        ("our Deployment deleted by hand", child("Deployment"), True),
        ("a Pod (the Deployment replaces it)", child("Pod"), False),
        ("another LocalLLM's Service", child("Service", uid="uid-0"), False),
        ("retained claim deleted", child("PersistentVolumeClaim", uid=None, labels=OWNED_LABELS), True),
    ],
)
def test_manually_deleted(case: str, obj: dict[str, Any], want: bool) -> None:
    assert (case, manually_deleted(obj, UID, "m")) == (case, want)


@pytest.mark.parametrize(
    ("case", "spec", "fragments"),
    [
        ("defaults pass", {}, []),
        ("official vLLM image", {"engine": {"image": "vllm/vllm-openai:v0.12.0"}}, []),
        ("CPU vLLM image", {"engine": {"image": "ghcr.io/sdc-llm/sdc-vllm-cpu:0.32.0"}}, []),
        ("any other image", {"engine": {"image": "evil.io/miner:1"}}, ["engine.image: 'evil.io/miner:1'"]),
        ("GPU toleration", {"scheduling": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}}, []),
        (
            "control-plane toleration",
            {"scheduling": {"tolerations": [{"key": "node-role.kubernetes.io/control-plane"}]}},
            ["taint key 'node-role.kubernetes.io/control-plane' is not allowed"],
        ),
        (
            "key-less toleration tolerates everything",
            {"scheduling": {"tolerations": [{"operator": "Exists"}]}},
            ["without a key"],
        ),
        (
            "priority class",
            {"scheduling": {"priorityClassName": "system-node-critical"}},
            ["priorityClassName: 'system-node-critical' is not allowed"],
        ),
        (
            "remote code outside the allow-list",
            {"model": {"name": "sdc/tiny", "revision": REV, "trustRemoteCode": True}},
            ["model.trustRemoteCode: 'sdc/tiny'"],
        ),
    ],
)
def test_policy_errors(case: str, spec: dict[str, Any], fragments: list[str]) -> None:
    errors = policy_errors(llm(**spec).spec, SETTINGS)
    found = [f for f in fragments if any(f in e for e in errors)]
    assert (case, len(errors), found) == (case, len(fragments), fragments), errors


def test_policy_allow_lists_come_from_settings() -> None:
    settings = OperatorSettings(
        metrics_port=0,
        allowed_priority_classes=["llm-high"],
        trust_remote_code_repos=["sdc/*"],
        allowed_images=["registry.local/*"],
    )
    spec = llm(
        model={"name": "sdc/tiny", "revision": REV, "trustRemoteCode": True},
        scheduling={"priorityClassName": "llm-high"},
        engine={"image": "registry.local/vllm:1"},
    ).spec
    assert policy_errors(spec, settings) == []


@pytest.mark.parametrize(
    ("arg", "refused"),
    [
        ("--model", True),
        ("--model=/etc", True),
        ("--mod", True),  # argparse takes unambiguous prefixes
        ("--tokenizer=other/repo", True),
        ("--trust-remote-code", True),
        ("--trust_remote_code", True),  # vLLM accepts underscores
        ("--port=1", True),
        ("-tp", True),
        ("--load-format=pt", True),
        ("--max-model-len=4096", False),
        ("--tokenizer-mode=slow", False),
        ("--quantization=awq", False),
        ("--device=cpu", False),
        ("--max-batch=4", False),
        ("--model-impl=vllm", False),
    ],
)
def test_forbidden_engine_args(arg: str, refused: bool) -> None:
    assert (arg, bool(re.match(FORBIDDEN_ARG_PATTERN, arg))) == (arg, refused)
    errors = semantic_errors(llm(engine={"args": [arg]}).spec)
    assert (arg, bool(errors)) == (arg, refused)


@pytest.mark.parametrize(
    ("args", "positional"),
    [
        ([], []),
        (["--max-num-seqs=8"], []),
        (["--max-num-seqs", "8"], []),
        (["--quantization", "awq", "--enforce-eager"], []),
        (["--seed", "-1"], []),  # a negative number is a value, not a flag
        (["-O", "3"], []),
        (["--compilation-config", '{"level": 3}'], []),
        (["--chat-template", ""], []),
        (["google/gemma-2-9b-it"], ["google/gemma-2-9b-it"]),  # vllm serve's model, by position
        (["--max-num-seqs=8", "other/model"], ["other/model"]),  # '=' took the value: the word is free
        (["--max-num-seqs", "8", "other/model"], ["other/model"]),
        (["--seed", "-1", "other/model"], ["other/model"]),
        (["--enforce-eager", "--", "other/model"], ["--", "other/model"]),
        (["--"], ["--"]),
        (["-"], ["-"]),
        (["--dtype\nother/model"], ["--dtype\nother/model"]),  # the CEL rule joins the list with line breaks
    ],
)
def test_positional_engine_args(args: list[str], positional: list[str]) -> None:
    assert (args, positional_args(args)) == (args, positional)
    # The CRD's CEL rule says the same with one RE2 match over the joined list (RE2 and `re` agree on it).
    shape_ok = not args or (
        not any("\n" in a for a in args) and re.fullmatch(ARGS_SHAPE_PATTERN, "\n".join(args)) is not None
    )
    assert (args, shape_ok) == (args, not positional)
    errors = semantic_errors(llm(engine={"args": args}).spec)
    assert (args, any("follows no flag" in e for e in errors)) == (args, bool(positional))


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("HF_HUB_OFFLINE", True),
        ("HOME", True),
        ("SDC_MODEL", True),
        ("OLLAMA_HOST", True),
        ("VLLM_LOGGING_LEVEL", False),
    ],
)
def test_operator_env_is_refused(name: str, refused: bool) -> None:
    errors = semantic_errors(llm(engine={"env": [{"name": name, "value": "0"}]}).spec)
    assert (name, bool(errors)) == (name, refused)


@pytest.mark.parametrize(
    ("text", "value"),
    [("50Gi", 50 * 2**30), ("500m", 0.5), ("1.5", 1.5), ("2k", 2000), ("bad", None)],
)
def test_parse_quantity(text: str, value: float | None) -> None:
    parsed = parse_quantity(text)
    assert (text, None if parsed is None else float(parsed)) == (text, value)


NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def peer(priority: int, seconds_ago: int, lifetime: int = 30) -> dict[str, Any]:
    seen = (NOW - datetime.timedelta(seconds=seconds_ago)).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen}


@pytest.mark.parametrize(
    ("case", "peers", "clash"),
    [
        ("no peers", {}, []),
        ("a live peer with another priority", {"b": peer(100, 5)}, []),
        ("a live peer with the same priority", {"b": peer(200, 5)}, ["b"]),
        ("a dead peer with the same priority", {"b": peer(200, 60)}, []),
        ("this replica's own earlier run", {"me@host/20260101/abc": peer(200, 5)}, []),
    ],
)
def test_priority_clash(case: str, peers: dict[str, Any], clash: list[str]) -> None:
    assert (case, priority_clash(peers, 200, NOW, "me@host/")) == (case, clash)


@pytest.mark.parametrize(
    ("case", "peers", "paused"),
    [
        ("alone", {}, False),
        ("this replica itself and a lower live peer", {"me": peer(200, 1), "b": peer(100, 5)}, False),
        ("a live higher peer", {"b": peer(300, 5)}, True),
        ("a higher peer gone silent", {"b": peer(300, 60)}, False),
        ("a malformed entry", {"b": {"priority": "x", "lastseen": "never"}, "c": "junk"}, False),
        ("a malformed lifetime", {"b": {**peer(300, 5), "lifetime": "soon"}}, False),
    ],
)
def test_outranked_means_a_live_peer_with_a_higher_priority(case: str, peers: dict[str, Any], paused: bool) -> None:
    assert (case, outranked(peers, 200, NOW)) == (case, paused)


def test_debouncer_coalesces_a_burst_into_one_run_with_the_latest_state() -> None:
    runs: list[tuple[str, int]] = []
    state = {"value": 0}

    async def scenario() -> None:
        done = asyncio.Event()

        async def run(key: Hashable) -> None:
            runs.append((str(key), state["value"]))
            if len(runs) == 2:
                done.set()

        debouncer = Debouncer(0.05, run)
        for i in range(10):
            state["value"] = i
            debouncer.trigger("k")
        debouncer.trigger("other")
        await asyncio.wait_for(done.wait(), timeout=5)
        await asyncio.sleep(0.1)  # a wrong debouncer would run "k" again here

    asyncio.run(scenario())
    assert sorted(runs) == [("k", 9), ("other", 9)]


@pytest.mark.parametrize(
    ("now", "last_start", "expected"),
    [
        (10.0, None, 0.5),  # never ran: the coalescing delay
        (10.0, 9.9, 1.9),  # ran 0.1 s ago: waits out the 2 s interval
        (10.0, 8.5, 0.5),  # interval nearly over: the delay is the longer
        (10.0, 5.0, 0.5),  # long quiet: the delay
    ],
)
def test_run_delay_keeps_a_minimum_interval_per_key(now: float, last_start: float | None, expected: float) -> None:
    assert run_delay(now, last_start, 0.5, 2.0) == pytest.approx(expected)


def test_debouncer_runs_a_key_at_most_once_per_interval_with_the_latest_state() -> None:
    runs: list[tuple[str, int, float]] = []
    state = {"value": 0}

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        debouncer = Debouncer(0.02, lambda key: _record(key), min_interval_s=0.4)

        async def _record(key: Hashable) -> None:
            runs.append((str(key), state["value"], loop.time()))

        debouncer.trigger("k")
        await asyncio.sleep(0.1)  # first run done
        for i in range(1, 6):  # changes spread over the interval
            state["value"] = i
            debouncer.trigger("k")
            debouncer.trigger(f"other-{i}")  # other keys are not held back
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)

    asyncio.run(scenario())
    mine = [(v, t) for k, v, t in runs if k == "k"]
    assert [v for v, _ in mine] == [0, 5], mine  # one run for the five changes, with the last value
    assert mine[1][1] - mine[0][1] >= 0.4 - 0.01
    others = sorted(k for k, _, _ in runs if k != "k")
    assert others == [f"other-{i}" for i in range(1, 6)]


def test_list_replacements_put_back_whole_lists_behind_a_uid_test() -> None:
    want = {"spec": {"ports": [{"name": "http", "port": 8000}], "replicas": 1}}
    ops = list_replacements(want, [".spec.ports[http].port", ".spec.ports[http].protocol", ".spec.replicas"], "u1")
    assert ops == [
        {"op": "test", "path": "/metadata/uid", "value": "u1"},
        {"op": "replace", "path": "/spec/ports", "value": [{"name": "http", "port": 8000}]},
    ]
    assert list_replacements(want, [".spec.replicas"], "u1") == [], "plain fields need no replacement"


@pytest.mark.parametrize(
    ("case", "status", "delays"),
    [
        ("raced write", 409, [1.0, 1.0, 1.0, 1.0]),
        ("API server down", 0, [1.0, 2.0, 4.0, 5.0, 5.0]),
        ("refused (quota)", 403, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]),
        ("name taken", None, [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]),
    ],
)
def test_reconcile_retries_start_soon_and_settle_at_the_errors_pace(
    case: str, status: int | None, delays: list[float]
) -> None:
    got = [retry_after(attempt, status) for attempt in range(1, len(delays) + 1)]
    assert (case, got) == (case, delays)


@pytest.mark.parametrize(
    ("case", "handled", "uid", "generation", "pending"),
    [
        ("first event after a start", None, "u1", 1, True),
        ("own status write (same generation)", ("u1", 3), "u1", 3, False),
        ("spec edited", ("u1", 3), "u1", 4, True),
        ("deleted and recreated under the same name", ("u1", 1), "u2", 1, True),
    ],
)
def test_spec_pending(case: str, handled: tuple[str, int] | None, uid: str, generation: int, pending: bool) -> None:
    assert (case, spec_pending(handled, uid, generation)) == (case, pending)
