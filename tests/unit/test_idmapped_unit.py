"""runtime.idmapped without root: which tree and which idmapping calls an
entry makes (through the recording fake), and what is refused first."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes import FakeSyscalls  # noqa: E402
from runtime import idmapped  # noqa: E402
from runtime.errors import HakoError  # noqa: E402
from runtime.launch import idmapped_indices  # noqa: E402
from runtime.mountopts import parse_options  # noqa: E402
from runtime.syscalls import (AT_EMPTY_PATH, AT_RECURSIVE, MOUNT_ATTR_IDMAP,  # noqa: E402
                              OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE)

MAP = [{"containerID": 0, "hostID": 1000, "size": 10}]


@pytest.mark.parametrize("options,tree_rec,attr_rec", [
    (["bind", "idmap"], False, False),
    (["rbind", "idmap"], True, False),
    (["rbind", "ridmap"], True, True),
    (["bind", "ridmap"], False, True),
])
def test_recursion_of_the_tree_and_of_the_idmapping(tmp_path, options, tree_rec, attr_rec):
    sc = FakeSyscalls()
    m = {"destination": "/d", "type": "bind", "source": str(tmp_path), "options": options}
    fd = idmapped._tree(3, m, "/bundle", parse_options(options), 42, sc)
    os.close(fd)
    (ot,), (ms,) = sc.named("open_tree"), sc.named("mount_setattr")
    assert ot.args == (-100, str(tmp_path), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
                       | (AT_RECURSIVE if tree_rec else 0))
    assert ms.args[1:] == (AT_EMPTY_PATH | (AT_RECURSIVE if attr_rec else 0),
                           MOUNT_ATTR_IDMAP, 0, 0, 42)


def test_relative_source_is_the_bundles(tmp_path):
    sc = FakeSyscalls()
    (tmp_path / "vol").mkdir()
    m = {"destination": "/d", "type": "bind", "source": "vol", "options": ["bind"]}
    os.close(idmapped._tree(0, m, str(tmp_path), parse_options(["bind"]), 7, sc))
    assert sc.named("open_tree")[0].args[1] == str(tmp_path / "vol")


def test_failed_idmapping_closes_the_tree(tmp_path):
    sc = FakeSyscalls(fail={"mount_setattr": OSError(22, "Invalid argument")})
    before = set(os.listdir("/proc/self/fd"))
    m = {"destination": "/d", "type": "bind", "source": str(tmp_path), "options": ["bind"]}
    with pytest.raises(HakoError, match=r"^mounts\[5\]: idmapping .*: Invalid argument \("):
        idmapped._tree(5, m, "/", parse_options(["bind"]), 7, sc)
    assert set(os.listdir("/proc/self/fd")) == before


def test_checks(monkeypatch):
    bind = {"destination": "/d", "type": "bind", "source": "/s", "options": ["bind", "idmap"]}
    spec = {"mounts": [{"destination": "/proc", "type": "proc"}, bind,
                       {"destination": "/e", "type": "bind", "source": "/s", "options": ["bind"],
                        "uidMappings": MAP, "gidMappings": MAP}]}
    assert idmapped_indices(spec) == [1, 2]
    launch = SimpleNamespace(idmap_wanted=[1, 2], uids=[(0, 1000, 10)])
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    idmapped.check(spec, launch, rootless=False)
    with pytest.raises(HakoError, match=r"^mounts\[1\]: idmapped mounts need root"):
        idmapped.check(spec, launch, rootless=True)
    with pytest.raises(HakoError, match=r"^mounts\[1\]: idmap without uidMappings/gidMappings "
                                        "needs a user namespace"):
        idmapped.check(spec, SimpleNamespace(idmap_wanted=[1], uids=[]), rootless=False)
    spec["mounts"][1] = {"destination": "/t", "type": "tmpfs", "options": ["idmap"],
                         "uidMappings": MAP, "gidMappings": MAP}
    with pytest.raises(HakoError, match=r"^mounts\[1\]: idmapped mounts must be bind mounts"):
        idmapped.check(spec, launch, rootless=False)
