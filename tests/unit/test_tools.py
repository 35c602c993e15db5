"""hack/tools.py's pure parts: the wrapper module that raises a tool's dependency floors, the pins."""

from __future__ import annotations

import pytest

from hack import tools


def test_floors_gomod_requires_the_tool_and_each_floor() -> None:
    gomod = tools.floors_gomod("example.com/tool/v2", "v2.1.0", ["golang.org/x/net@v0.33.0", " a.b/c@v1.2.3 "])
    assert gomod.splitlines()[0] == "module sdc.local/tools-wrapper"
    assert "go 1.24" in gomod
    assert "\texample.com/tool/v2 v2.1.0\n" in gomod
    assert "\tgolang.org/x/net v0.33.0\n" in gomod
    assert "\ta.b/c v1.2.3\n" in gomod
    assert "replace" not in gomod  # the tool's own code, as published


@pytest.mark.parametrize("floor", ["golang.org/x/net", "golang.org/x/net@", "@v1.0.0", "golang.org/x/net@latest"])
def test_floors_gomod_refuses_a_malformed_floor(floor: str) -> None:
    with pytest.raises(tools.ToolError, match=r"path@vX\.Y\.Z"):
        tools.floors_gomod("example.com/tool", "v1.0.0", [floor])


def test_kube_router_is_pinned_with_parseable_floors() -> None:
    versions = tools.read_versions()
    assert versions["KUBE_ROUTER_VERSION"].startswith("v2.")
    gomod = tools.floors_gomod(
        tools.KUBE_ROUTER_MODULE, versions["KUBE_ROUTER_VERSION"], versions["KUBE_ROUTER_DEPENDENCY_FLOORS"].split(",")
    )
    assert f"\t{tools.KUBE_ROUTER_MODULE} {versions['KUBE_ROUTER_VERSION']}" in gomod
    assert tools.APT_PACKAGES["ipset"]  # kube-router's pod sets
