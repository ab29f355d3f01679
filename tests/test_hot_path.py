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

#: what no hot verb may import on its ordinary path
HEAVY = ("os", "posixpath", "_collections_abc", "stat", "_json", "json", "re", "enum",
         "typing", "ctypes", "signal", "subprocess", "__future__", "runtime.cgroups.base",
         "runtime.cgroups.v1", "runtime.cgroups.v2", "runtime.cgroups.ops",
         "runtime.cgroups.fsutil", "runtime.cgroups.systemd")


def test_hot_verbs_import_nothing_heavy(rt):
    cid = rt.new_id()
    bundle = rt.bundle(["sleep", "100"])
    assert rt.hako("create", "--bundle", bundle, cid).returncode == 0
    seen = {}
    for args in (("state", cid), ("start", cid), ("state", cid), ("kill", cid, "CONT"),
                 ("list",), ("list", "--format", "json")):
        seen[args] = support.imported_by(rt, *args) & set(HEAVY)
    assert rt.hako("kill", cid, "KILL").returncode == 0
    support.wait_until(lambda: support.stopped(rt, cid), what=f"{cid} to stop")
    seen[("delete", cid)] = support.imported_by(rt, "delete", cid) & set(HEAVY)
    assert {k: sorted(v) for k, v in seen.items() if v} == {}
    # and the container is gone, cgroup and all (the quick teardown path)
    assert rt.hako("state", cid).returncode != 0
