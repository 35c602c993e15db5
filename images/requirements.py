"""Print the requirements of the project's base plus one extra, one per line (Dockerfile helper).

Why: the images install their dependencies in a layer of their own, before the
code is copied, so a code change reuses that layer (for the runtime, GBs of
torch). pip cannot install "the dependencies of ." without the sources, so
this reads them from pyproject.toml. Standard library only (runs on the bare base image).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any


def requirements(pyproject: dict[str, Any], extra: str) -> list[str]:
    project = pyproject["project"]
    extras = project.get("optional-dependencies", {})
    if extra not in extras:
        raise SystemExit(f"pyproject.toml has no extra {extra!r}; known: {', '.join(sorted(extras))}")
    return [str(r) for r in [*project.get("dependencies", []), *extras[extra]]]


if __name__ == "__main__":
    data = tomllib.loads(Path(sys.argv[2] if len(sys.argv) > 2 else "pyproject.toml").read_text())
    print("\n".join(requirements(data, sys.argv[1])))
