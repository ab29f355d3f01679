"""Fixtures for the engine matrix (marker ``engines``; ``make test-engines``).

- ``engine_session``: the base directory, the busybox image archives and the
  final sweep (session scope).
- ``engine``: one cell of the matrix for one runtime, started with private state
  and torn down (graceful stop, then the sweep) before the next one starts;
  parametrized over enginekit.CELLS x (hako, runc). runc is the reference,
  reported side by side: its failures are xfail, never a red build.

Environment: HAKO_ENGINE_CELLS=podman-root,containerd (a subset),
HAKO_ENGINE_RUNTIMES=hako (skip the runc column), HAKO_ENGINE_MATRIX=FILE (also
write the matrix there as markdown), HAKO_ENGINE_CMD_TIMEOUT (seconds per
engine command, default 60).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import enginekit  # noqa: E402

HERE = Path(__file__).resolve().parent
_cells = [c for c in (os.environ.get("HAKO_ENGINE_CELLS") or ",".join(enginekit.CELLS)).split(",")
          if c]
_runtimes = [r for r in (os.environ.get("HAKO_ENGINE_RUNTIMES") or "hako,runc").split(",") if r]
for _c in _cells:
    if _c not in enginekit.CELLS:
        raise ValueError(f"HAKO_ENGINE_CELLS: unknown cell {_c!r} (one of {list(enginekit.CELLS)})")

PARAMS = [
    pytest.param((cell, rt), id=f"{cell}-{rt}",
                 marks=[pytest.mark.xfail(reason="runc, the reference", strict=False)]
                 if rt == "runc" else [])
    for cell in _cells for rt in _runtimes
]

#: (step, cell, runtime) -> (outcome, message), for the summary table
RESULTS: dict[tuple[str, str, str], tuple[str, str]] = {}
STEPS: list[str] = []


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.engines)


@pytest.fixture(scope="session")
def engine_session():
    if os.geteuid() != 0:
        pytest.skip("the engine matrix runs as root (rootless cells switch to the test user)")
    session = enginekit.Session()
    yield session
    if os.environ.get("HAKO_TEST_KEEP"):
        print(f"\nhako: kept engine directories in {session.base}", file=sys.stderr)
        return
    left = session.close()
    if left:
        pytest.fail("engines: left behind at session end (now cleaned up):\n  "
                    + "\n  ".join(left), pytrace=False)


@pytest.fixture(scope="session", params=PARAMS)
def engine(request, engine_session):
    cell, runtime = request.param
    try:
        eng = enginekit.make_engine(engine_session, cell, runtime)
    except enginekit.Unavailable as e:
        pytest.skip(f"unavailable: {e}")
    try:
        eng.snapshot_state()
        eng.start()
    except enginekit.Unavailable as e:
        eng.teardown()
        pytest.skip(f"unavailable: {e}")
    except BaseException:
        log = eng.log_tail()
        eng.teardown()
        if log:
            print(f"\n{cell} ({runtime}) log:\n{log}", file=sys.stderr)
        raise
    yield eng
    left = eng.teardown()
    if left:
        pytest.fail(f"{cell} ({runtime}): {len(left)} thing(s) left behind after the engine "
                    f"stopped, e.g. {left[0]} (all cleaned up now):\n  " + "\n  ".join(left),
                    pytrace=False)


# ---------------------------------------------------------------- the summary table

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    if callspec is None or "engine" not in callspec.params or HERE not in \
            Path(str(item.fspath)).resolve().parents:
        return
    cell, runtime = callspec.params["engine"]
    step = item.originalname.removeprefix("test_")
    if step not in STEPS:
        STEPS.append(step)
    key = (step, cell, runtime)
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        msg = ""
        if call.excinfo is not None:
            exc = call.excinfo.value
            msg = str(getattr(exc, "msg", "") or exc)
        first = (msg.strip().splitlines() or [""])[0]
        if rep.passed:
            RESULTS[key] = ("pass", "")
        elif hasattr(rep, "wasxfail"):
            RESULTS[key] = ("fail", first)
        elif rep.skipped:
            RESULTS[key] = ("skip", first.removeprefix("Skipped: "))
        else:
            RESULTS[key] = ("FAIL", first)
    elif rep.when == "teardown" and rep.failed and key in RESULTS:
        RESULTS[key] = ("FAIL", "teardown: " + str(call.excinfo.value).splitlines()[0]
                        if call.excinfo else "teardown failed")


def _cell_text(outcome: str, msg: str) -> str:
    if outcome == "pass":
        return "pass"
    msg = msg.replace("|", "\\|")
    if len(msg) > 240:
        msg = msg[:237] + "..."
    if outcome == "skip":
        return msg or "skipped"
    return f"{outcome.lower()}: {msg}" if msg else outcome.lower()


def matrix_markdown() -> str:
    cols = [(c, r) for c in _cells for r in _runtimes
            if any(k[1:] == (c, r) for k in RESULTS)]
    if not cols:
        return ""
    head = "| step | " + " | ".join(f"{c} {r}" for c, r in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for step in STEPS:
        cells = [_cell_text(*RESULTS[(step, c, r)]) if (step, c, r) in RESULTS else ""
                 for c, r in cols]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter):
    table = matrix_markdown()
    if not table:
        return
    terminalreporter.section("engine matrix (hako and runc side by side)")
    terminalreporter.write(table)
    path = os.environ.get("HAKO_ENGINE_MATRIX")
    if path:
        Path(path).write_text(table)
