"""The frozen hako's two-phase start (packaging/boot.c, packaging/entry.py).

dist/hako's interpreter starts with its core only (types, builtins, sys, the
built-in and frozen importers); the hot verbs run on that, everything else
completes the start first, and so does a hot verb that leaves its ordinary
path. ``HAKO_LAUNCHER_DEBUG`` makes the start say which phases ran;
``HAKO_BOOT_OFF`` starts the whole interpreter at once (the reference).
Root and rootless; skipped without dist/hako (or HAKO_BINARY).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import support

BINARY = Path(os.environ.get("HAKO_BINARY") or support.REPO / "dist" / "hako")

pytestmark = pytest.mark.skipif(
    not (BINARY.is_file() and os.access(BINARY, os.X_OK)),
    reason=f"no frozen hako at {BINARY} (run `make binary`, or set HAKO_BINARY)")

CORE = "hako: boot: the interpreter's core only"
FULL = "hako: boot: completing the interpreter's start"


@pytest.fixture
def frt(rt):
    """rt, running the frozen binary whatever HAKO says."""
    rt.hako_path = BINARY
    return rt


def phases(r) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("hako: boot:")]


def debug(frt, *args, **kw):
    return frt.hako(*args, env={"HAKO_LAUNCHER_DEBUG": "1"}, **kw)


def test_hot_verbs_run_on_the_core_alone(frt):
    cid = frt.new_id()
    r = debug(frt, "create", "--bundle", frt.bundle(["sleep", "100"]), cid)
    assert r.returncode == 0, r.stderr
    assert phases(r) == [CORE, FULL]  # create needs the whole interpreter
    for args in (("state", cid), ("start", cid), ("state", cid), ("kill", cid, "CONT"),
                 ("list",), ("list", "--format", "json"), ("ls", "-q"), ("--version",),
                 ("--help",)):
        r = debug(frt, *args)
        assert r.returncode == 0, (args, r.stderr)
        assert phases(r) == [CORE], (args, r.stderr)
    assert debug(frt, "kill", cid, "KILL").returncode == 0
    support.wait_until(lambda: support.stopped(frt, cid), what=f"{cid} to stop")
    r = debug(frt, "delete", cid)
    assert r.returncode == 0 and phases(r) == [CORE], r.stderr
    assert frt.hako("state", cid).returncode == 1


def test_other_verbs_complete_the_start(frt):
    cid = frt.new_id()
    assert frt.hako("create", "--bundle", frt.bundle(["sleep", "100"]), cid).returncode == 0
    assert frt.hako("start", cid).returncode == 0
    for args in (("exec", cid, "true"), ("ps", cid), ("features",), ("--debug", "state", cid)):
        r = debug(frt, *args)
        assert r.returncode == 0, (args, r.stderr)
        assert phases(r) == [CORE, FULL], (args, r.stderr)


def test_core_and_whole_start_say_the_same(frt):
    """Output, errors and exit codes do not depend on how the interpreter started:
    the same calls, on twin containers, one each way."""
    ids = {"core": frt.new_id(), "whole": frt.new_id()}
    env = {"core": None, "whole": {"HAKO_BOOT_OFF": "1"}}
    bundle = frt.bundle(["sleep", "100"])
    for cid in ids.values():
        assert frt.hako("create", "--bundle", bundle, cid).returncode == 0
    calls = [("state", "ID"), ("--version",), ("--help",), ("state", "nope"), ("state",),
             ("kill", "ID", "SIGNOPE"), ("start", "--bogus", "ID"), ("--root",),
             ("frobnicate",), ("state", "bad/id"), ("start", "ID"), ("state", "ID"),
             ("start", "ID"), ("delete", "ID"), ("kill", "ID", "KILL"), ("delete", "--force", "ID"),
             ("state", "ID"), ("delete", "ID"), ("delete", "--force", "ID"), ("list", "-q")]
    for args in calls:
        seen = {}
        for way in ("core", "whole"):
            r = frt.hako(*(ids[way] if a == "ID" else a for a in args), env=env[way])
            seen[way] = (r.returncode, _same(r.stdout.replace(ids[way], "ID")),
                         r.stderr.replace(ids[way], "ID"))
        assert seen["core"] == seen["whole"], args


def _same(out: str) -> str:
    """A state without what twins differ in (pid, creation time)."""
    try:
        doc = json.loads(out)
    except ValueError:
        return out
    if isinstance(doc, dict):
        doc.pop("pid", None)
        doc.pop("created", None)
    return json.dumps(doc)


def test_hot_verbs_off_their_path_complete_the_start(frt, tmp_path):
    """Hooks (subprocess, signal), the whole-start way, mid-verb."""
    out = frt.dir / "hooks.log"
    cid = frt.new_id()
    script = f"echo $1 >> {out}"
    hooks = {name: [{"path": "/bin/sh", "args": ["sh", "-c", script, "sh", name]}]
             for name in ("poststart", "poststop")}
    bundle = frt.bundle(["sleep", "100"], patch={"hooks": hooks})
    assert frt.hako("create", "--bundle", bundle, cid).returncode == 0
    r = debug(frt, "start", cid)
    assert r.returncode == 0 and phases(r) == [CORE, FULL], r.stderr
    r = debug(frt, "delete", "--force", cid)
    assert r.returncode == 0 and phases(r) == [CORE, FULL], r.stderr
    assert out.read_text().split() == ["poststart", "poststop"]


def test_a_closed_stdout_is_an_error_not_a_crash(frt):
    """SIGPIPE is ignored from the start, as CPython's own start does: a verb
    whose reader went away fails with a message, not death by signal."""
    import subprocess
    r_fd, w_fd = os.pipe()
    os.close(r_fd)
    try:
        p = subprocess.run(frt.user.prefix() + [str(BINARY), "--version"], stdout=w_fd,
                           stderr=subprocess.PIPE, env={"PATH": support.CLEAN_PATH},
                           timeout=30)
    finally:
        os.close(w_fd)
    assert p.returncode > 0, p  # not killed by a signal (negative)
