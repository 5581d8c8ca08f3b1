"""Deterministic fault injection for the crash tests: ``SEMASSOC_FAULT_AT=POINT`` kills the process with SIGKILL
(as ``kill -9`` would) when it reaches :func:`fault_point` ``POINT``; ``POINT:N`` kills it the N-th time (1-based);
``POINT:N:stop`` stops it there instead (SIGSTOP: it keeps its locks, as a slow run would) for tests of concurrent use.

The points are named where they are called (``grep -rn fault_point semassoc``). Unset, the check is one dictionary
look-up. tests/test_faults.py runs commands in subprocesses with it and checks that the rerun recovers.
"""

from __future__ import annotations

import os
import signal

ENV_FAULT_AT = "SEMASSOC_FAULT_AT"
_seen: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Kill this process here when ``$SEMASSOC_FAULT_AT`` names this point (see the module docstring)."""
    wanted = os.environ.get(ENV_FAULT_AT)
    if not wanted:
        return
    point, _, rest = wanted.partition(":")
    if point != name:
        return
    nth, _, action = rest.partition(":")
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == (int(nth) if nth.isdigit() else 1):
        os.kill(os.getpid(), signal.SIGSTOP if action == "stop" else signal.SIGKILL)
