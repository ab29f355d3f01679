"""runtime.cgroups.paused: the paused check every hot verb makes, from the
freezer files alone, against each driver's own is_frozen on the same files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runtime.cgroups import paused
from runtime.cgroups.v1 import V1Manager
from runtime.cgroups.v2 import V2Manager

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("state,own,want", [
    ("FROZEN", "1", True), ("FROZEN", "0", False), ("THAWED", "0", False),
    ("FROZEN", None, True), (None, None, False),
])
def test_v1(tmp_path, state, own, want):
    d = tmp_path / "freezer"
    d.mkdir()
    if state is not None:
        (d / "freezer.state").write_text(state + "\n")
    if own is not None:
        (d / "freezer.self_freezing").write_text(own + "\n")
    rec = {"driver": "hybrid", "id": "c", "paths": {"freezer": str(d)}}
    assert paused.is_frozen(rec) is want
    assert V1Manager("c", {"freezer": str(d)}).is_frozen() is want
    assert paused.is_frozen({"driver": "systemd", "inner": "v1", "paths": rec["paths"]}) is want


@pytest.mark.parametrize("value,want", [("1", True), ("0", False), (None, False)])
def test_v2(tmp_path, value, want):
    if value is not None:
        (tmp_path / "cgroup.freeze").write_text(value + "\n")
    rec = {"driver": "v2", "mount": str(tmp_path), "path": str(tmp_path)}
    assert paused.is_frozen(rec) is want
    assert V2Manager("c", str(tmp_path), str(tmp_path)).is_frozen() is want


def test_v1_without_freezer_is_never_paused():
    assert paused.is_frozen({"driver": "v1", "paths": {"memory": "/nonexistent"}}) is False


def test_the_hot_verbs_status_loads_no_driver():
    """Container.status() (state, start, kill, delete, list) reads the freezer
    files itself: no v1/v2/systemd driver module is imported for it."""
    code = ("import sys; from runtime.state import Container; c = Container('/', 'x', -1); "
            "c.init_alive = lambda: True; c.has_fifo = lambda: False; "
            "c.state = {'hako': {'cgroup': {'driver': 'hybrid', 'paths': {'freezer': '/nope'}}}}; "
            "print(c.status()); "
            "print(sorted(m for m in sys.modules if m.startswith('runtime.cgroups')))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); {code}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    status, mods = out.stdout.splitlines()
    assert status == "running"
    assert mods == "['runtime.cgroups', 'runtime.cgroups.paused']"
