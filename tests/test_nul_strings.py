"""A NUL character in process.args / env / cwd: refused before anything is
created, with one line naming the JSON path (issue 13, part 5). It used to
fail with exit 1 and an empty message; runc says "exec /bin/echo: invalid
argument". The validation itself is unit-tested in tests/spec/test_spec_nul.py."""

from __future__ import annotations

import json

import pytest

NUL_LINE = "contains a NUL character (\\u0000), which no argument, environment entry, path or name can hold"


@pytest.mark.parametrize("verb", ["create", "run"])
@pytest.mark.parametrize("field,value,where", [
    ("args", ["echo", "a\0b"], "process.args[1]"),
    ("env", ["PATH=/bin", "X=a\0b"], "process.env[1]"),
    ("cwd", "/tmp\0/x", "process.cwd"),
])
def test_nul_in_the_process_is_refused_at_create(rt, verb, field, value, where):
    cid = rt.new_id()
    bundle = rt.bundle(["true"], patch=lambda c: c["process"].update({field: value}) or c,
                       marker=False)
    r = rt.hako(verb, "--bundle", bundle, cid)
    assert r.returncode != 0
    assert r.stderr.splitlines() == [f"hako: config.json: {where}: {NUL_LINE}"]
    assert "does not exist" in rt.hako("state", cid).stderr


def test_nul_in_exec_process_file_is_refused(rt):
    cid = rt.new_id()
    assert rt.hako("run", "-d", "--bundle", rt.bundle(["sleep", "1000"]), cid).returncode == 0
    proc = rt.dir / "process.json"
    proc.write_text(json.dumps({"args": ["echo", "x\0y"], "cwd": "/", "env": ["PATH=/bin"]}))
    rt.chown(proc)
    r = rt.hako("exec", "--process", proc, cid)
    assert r.returncode != 0
    assert r.stderr.splitlines() == [f"hako: --process {proc}: process.args[1]: {NUL_LINE}"]
    assert json.loads(rt.hako("state", cid).stdout)["status"] == "running"
