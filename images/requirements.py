"""Print the requirements of the project's base plus one extra, one per line (Dockerfile helper).

Why: the images install their dependencies in a layer of their own, before the
code is copied, so a code change reuses that layer (for the runtime, GBs of
torch). pip cannot install "the dependencies of ." without the sources, so
this reads them from pyproject.toml. Standard library only (runs on the bare base image).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any


def requirements(pyproject: dict[str, Any], extra: str) -> list[str]:
    """The base's requirements and the extra's; an extra that names the project's own extras
    (`runtime-quant = ["sdc-localllm[runtime]", "bitsandbytes"]`) brings theirs, since pip could
    only look for the project itself on an index."""
    project = pyproject["project"]
    extras = project.get("optional-dependencies", {})
    if extra not in extras:
        raise SystemExit(f"pyproject.toml has no extra {extra!r}; known: {', '.join(sorted(extras))}")
    own = re.compile(rf"^{re.escape(project['name'])}\[([^\]]+)\]$")
    out: list[str] = [str(r) for r in project.get("dependencies", [])]
    pending, seen = [extra], set()
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        for req in extras[name]:
            found = own.match(str(req).replace(" ", ""))
            if found:
                pending += [e.strip() for e in found.group(1).split(",")]
            elif str(req) not in out:
                out.append(str(req))
    return out


if __name__ == "__main__":
    data = tomllib.loads(Path(sys.argv[2] if len(sys.argv) > 2 else "pyproject.toml").read_text())
    print("\n".join(requirements(data, sys.argv[1])))
