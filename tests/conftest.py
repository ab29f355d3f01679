"""Fixtures shared by all hako tests. The machinery lives in tests/support.py.

- ``mode``: "root" | "rootless" (parametrized; override with
  ``@pytest.mark.parametrize("mode", ["rootless"], indirect=True)``).
- ``rt``: a support.Runtime for the test's mode (``rt.hako(...)``, ``rt.runc(...)``,
  ``rt.bundle(...)``, ``rt.new_id()``); its teardown force-deletes every container
  and fails the test if anything (state, process, mount, cgroup) is left over.
- ``hako_session``: the session (0755 base dir in /tmp, cached busybox rootfs).

Environment: HAKO (hako executable, default <repo>/.venv/bin/hako), RUNC (default
/usr/sbin/runc), HAKO_TEST_USER (default hakotest), HAKO_TEST_TIMEOUT (seconds
per test, default 600), HAKO_TEST_KEEP=1 (keep the test directories).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import support  # noqa: E402

TEST_TIMEOUT = float(os.environ.get("HAKO_TEST_TIMEOUT") or 600)


def pytest_report_header(config):
    return [
        f"hako: HAKO={support.HAKO} RUNC={support.RUNC} euid={os.geteuid()} "
        f"test user={support.TEST_USER}",
    ]


@pytest.fixture(autouse=True)
def _per_test_time_limit():
    """A last-resort limit per test (every runtime call has its own, shorter one)."""
    if threading.current_thread() is not threading.main_thread() or TEST_TIMEOUT <= 0:
        yield
        return

    def on_alarm(signum, frame):
        raise support.RuntimeTimeout(f"test exceeded HAKO_TEST_TIMEOUT={TEST_TIMEOUT:g}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def _host_devices_untouched():
    """No test may change the host's device nodes (a systemd booted with
    /dev/null bound as its console once made it 0620 root:tty, which broke
    every rootless test after it)."""
    def snap():
        out = {}
        for d in ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"):
            try:
                st = os.stat(d)
                out[d] = (st.st_mode, st.st_uid, st.st_gid, st.st_rdev)
            except OSError:
                pass
        return out
    before = snap()
    yield
    after = snap()
    changed = {d: (before[d], after.get(d)) for d in before if after.get(d) != before[d]}
    assert not changed, f"the test changed host device nodes (mode, uid, gid, rdev): {changed}"


@pytest.fixture(scope="session")
def hako_session():
    session = support.Session()
    yield session
    if os.environ.get("HAKO_TEST_KEEP"):
        print(f"\nhako: kept test directories in {session.base}", file=sys.stderr)
        return
    left = session.close()
    if left:
        print("\nhako: removed leftovers at session end:\n  " + "\n  ".join(left),
              file=sys.stderr)


@pytest.fixture(params=list(support.MODES))
def mode(request):
    m = request.param
    if m not in support.MODES:
        raise ValueError(f"mode must be one of {support.MODES}, not {m!r}")
    if m == "root" and os.geteuid() != 0:
        pytest.skip("mode root needs euid 0 (run the tests as root)")
    if m == "rootless" and os.geteuid() == 0:
        try:
            support.Identity.test_user()
        except KeyError:
            pytest.skip(f"rootless mode as root runs the runtime as user {support.TEST_USER!r}, "
                        f"which does not exist (`make host-deps` creates it)")
    return m


@pytest.fixture
def rt(hako_session, mode):
    runtime = support.Runtime(hako_session, mode)
    try:
        problem = hako_session.hako_exec_problem(runtime.user)
        if problem:
            pytest.fail(problem, pytrace=False)
        yield runtime
    finally:
        left = runtime.teardown()
    if left:
        pytest.fail(
            f"leftovers after the test ({mode}), now cleaned up:\n  "
            + "\n  ".join(str(x) for x in left),
            pytrace=False,
        )
