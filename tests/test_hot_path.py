"""The hot verbs stay lean on real containers, root and rootless.

Engines call start/state/kill/delete/list several times per container, so a
module that one of them imports is paid on every call: ``os`` alone
(``_collections_abc``, ``posixpath``, ``stat``) costs about as much as the
rest of a ``state`` (runtime/state.py), ``_json`` is a dlopen, the cgroup
drivers a dozen modules. This runs each verb's ``cli.main`` in a bare
interpreter (``-I -S``, as both launchers run it) against a real container
and lists what the verb imported.
"""

from __future__ import annotations

import support
from support import REPO

#: what no hot verb may import on its ordinary path
HEAVY = ("os", "posixpath", "_collections_abc", "stat", "_json", "json", "re", "enum",
         "typing", "ctypes", "signal", "subprocess", "__future__", "runtime.cgroups.base",
         "runtime.cgroups.v1", "runtime.cgroups.v2", "runtime.cgroups.ops",
         "runtime.cgroups.fsutil", "runtime.cgroups.systemd")

_RUNNER = r"""
import sys
sys.path.insert(0, REPO)
before = set(sys.modules)
from runtime import cli
sys.argv = ["hako"] + ARGS
code = cli.main()
print("MODULES", " ".join(sorted(set(sys.modules) - before)))
sys.stdout.flush()
raise SystemExit(code)
"""


def _imports(rt, *args: str) -> set[str]:
    code = _RUNNER.replace("REPO", repr(str(REPO))).replace(
        "ARGS", repr(["--root", str(rt.state_dir), *args]))
    # Debian's interpreter, the one both launchers run (the test user may not run ours)
    r = rt.run(["/usr/bin/python3", "-I", "-S", "-c", code], timeout=30)
    assert r.returncode == 0, f"{args}: {r.stderr}"
    line = [x for x in r.stdout.splitlines() if x.startswith("MODULES")][-1]
    return set(line.split()[1:])


def test_hot_verbs_import_nothing_heavy(rt):
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "100"])
    assert rt.hako("create", "--bundle", bundle, cid).returncode == 0
    seen = {}
    for args in (("state", cid), ("start", cid), ("state", cid), ("kill", cid, "CONT"),
                 ("list",), ("list", "--format", "json")):
        seen[args] = _imports(rt, *args) & set(HEAVY)
    assert rt.hako("kill", cid, "KILL").returncode == 0
    support.wait_until(lambda: support.stopped(rt, cid), what=f"{cid} to stop")
    seen[("delete", cid)] = _imports(rt, "delete", cid) & set(HEAVY)
    assert {k: sorted(v) for k, v in seen.items() if v} == {}
    # and the container is gone, cgroup and all (the quick teardown path)
    assert rt.hako("state", cid).returncode != 0
