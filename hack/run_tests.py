#!/usr/bin/env python3
"""Run pytest, treating "no tests collected" (exit 5) as a failure with a clear message.

An empty selection means the suite is miswired, not that all is well.
"""

from __future__ import annotations

import sys

import pytest


def main() -> int:
    rc = int(pytest.main(sys.argv[1:]))
    if rc == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("pytest collected no tests: the selection is empty, which is a wiring error", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
