"""runtime.security against the real kernel, each in a forked child so the test
process keeps its own personality, scheduling and affinity."""

from __future__ import annotations

import ctypes
import json
import os
import platform

import pytest

import forked
from runtime import security
from runtime.errors import HakoError

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_IOPRIO_GET = {"x86_64": 252, "aarch64": 31}.get(platform.machine())


def in_child(spec: dict, probe) -> dict:
    """apply_process_attrs(spec) in a child; returns probe()'s dict, or {"error": msg}."""
    def body(w: int) -> int:
        try:
            security.apply_initial_affinity(spec)
            security.apply_process_attrs(spec)
            out = probe()
        except HakoError as e:
            out = {"error": str(e)}
        os.write(w, json.dumps(out).encode())
        return 0
    res = forked.run(body)
    assert res.code == 0, res
    return json.loads(res.output)


def test_personality_linux32_changes_uname():
    if platform.machine() != "x86_64":
        pytest.skip("LINUX32 is checked through uname on x86_64")
    got = in_child({"process": {"personality": {"domain": "LINUX32"}}},
                   lambda: {"machine": os.uname().machine,
                            "persona": _libc.personality(ctypes.c_ulong(0xFFFFFFFF))})
    assert got == {"machine": "i686", "persona": 0x8}


def test_personality_flag():
    got = in_child({"process": {"personality": {"domain": "LINUX",
                                                 "flags": ["ADDR_NO_RANDOMIZE"]}}},
                   lambda: {"persona": _libc.personality(ctypes.c_ulong(0xFFFFFFFF))})
    assert got == {"persona": 0x0040000}


def test_scheduler_batch_with_nice():
    got = in_child({"process": {"scheduler": {"policy": "SCHED_BATCH", "nice": 5}}},
                   lambda: {"policy": os.sched_getscheduler(0),
                            "nice": os.getpriority(os.PRIO_PROCESS, 0)})
    assert got == {"policy": os.SCHED_BATCH, "nice": 5}


def test_scheduler_idle():
    got = in_child({"process": {"scheduler": {"policy": "SCHED_IDLE"}}},
                   lambda: {"policy": os.sched_getscheduler(0)})
    assert got == {"policy": os.SCHED_IDLE}


def test_scheduler_fifo_as_root_or_a_clear_eperm():
    got = in_child({"process": {"scheduler": {"policy": "SCHED_FIFO", "priority": 3,
                                              "flags": ["SCHED_FLAG_RESET_ON_FORK"]}}},
                   lambda: {"policy": os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK,
                            "priority": os.sched_getparam(0).sched_priority})
    if os.geteuid() == 0 and "error" not in got:
        assert got == {"policy": os.SCHED_FIFO, "priority": 3}
    else:  # unprivileged (or a root without CAP_SYS_NICE / RT budget)
        assert got["error"].startswith("process.scheduler: sched_setattr(SCHED_FIFO): ")
        assert "CAP_SYS_NICE" in got["error"] or "Operation not permitted" not in got["error"]


def test_negative_nice_unprivileged_is_explained():
    if os.geteuid() == 0:
        pytest.skip("root may lower nice")
    got = in_child({"process": {"scheduler": {"policy": "SCHED_OTHER", "nice": -5}}},
                   lambda: {})
    assert "a negative nice value needs CAP_SYS_NICE" in got["error"]


@pytest.mark.skipif(_IOPRIO_GET is None, reason="ioprio_get number unknown on this arch")
def test_io_priority():
    def probe():
        v = _libc.syscall(ctypes.c_long(_IOPRIO_GET), ctypes.c_int(1), ctypes.c_int(0))
        return {"class": v >> 13, "level": v & 0x1FFF}
    got = in_child({"process": {"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 6}}},
                   probe)
    assert got == {"class": 2, "level": 6}
    got = in_child({"process": {"ioPriority": {"class": "IOPRIO_CLASS_IDLE"}}}, probe)
    assert got == {"class": 3, "level": 0}


def test_cpu_affinity():
    allowed = sorted(os.sched_getaffinity(0))
    first = allowed[0]
    got = in_child({"process": {"execCPUAffinity": {"initial": ",".join(map(str, allowed)),
                                                    "final": str(first)}}},
                   lambda: {"cpus": sorted(os.sched_getaffinity(0))})
    assert got == {"cpus": [first]}


def test_cpu_affinity_on_no_usable_cpu():
    got = in_child({"process": {"execCPUAffinity": {"final": "8000"}}}, lambda: {})
    assert got["error"].startswith("process.execCPUAffinity.final: sched_setaffinity: ")
    assert "allowed: " in got["error"]
