"""The status in the state each kind of hook receives (issue 13, part 5).

runtime-spec 1.3 (runtime.md "State", "Lifecycle"): "creating" is lifecycle step
2 only; prestart, createRuntime and createContainer (steps 3-5) and
startContainer (step 7) come after it and before the user program runs (step
8): "created". poststart is step 9 ("running"), poststop step 13 ("stopped").
The OCI validation suite and crun give "created" to prestart; runc 1.1 gives
"creating" to the first three (hako did too). runtime/hooks.py STATUS.
"""

from __future__ import annotations

import json

import support
from test_hooks import hooklog, host_hook, in_container_hook, records, with_hooks  # noqa: F401

EXPECTED = {"prestart": "created", "createRuntime": "created", "createContainer": "created",
            "startContainer": "created", "poststart": "running", "poststop": "stopped"}


def test_each_hook_kind_gets_the_status_of_its_moment(rt, hooklog):  # noqa: F811
    hooks = {k: [host_hook(hooklog, k)] for k in EXPECTED if k != "startContainer"}
    hooks["startContainer"] = [in_container_hook("startContainer")]
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "1000"], patch=with_hooks(hooklog, hooks))
    r = rt.hako("create", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    pid = json.loads(rt.hako("state", cid).stdout)["pid"]
    assert rt.hako("start", cid).returncode == 0
    assert rt.hako("kill", cid, "KILL").returncode == 0
    support.wait_until(lambda: json.loads(rt.hako("state", cid).stdout)["status"] == "stopped")
    assert rt.hako("delete", cid).returncode == 0
    seen = {rec["kind"]: rec["state"] for rec in records(hooklog)}
    seen["startContainer"] = json.loads((hooklog / "startContainer.json").read_text())
    assert {k: s["status"] for k, s in seen.items()} == EXPECTED
    # "created" and "running" come with the pid (REQUIRED on Linux), as the
    # runtime sees it for runtime-namespace hooks
    for kind in ("prestart", "createRuntime", "poststart"):
        assert seen[kind]["pid"] == pid, kind
    assert "pid" in seen["createContainer"] and "pid" in seen["startContainer"]
