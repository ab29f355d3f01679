"""OCI lifecycle hooks: run each with the container state on stdin.

Where each kind runs (runtime-spec config.md#posix-platform-hooks):
  prestart, createRuntime   create, runtime namespace, after the namespaces and
                            mounts exist, before pivot_root     (hako parent)
  createContainer           create, container namespaces, before pivot_root
                                                                  (the init)
  startContainer            start, container namespaces, after pivot_root,
                            right before the user process execs (the init)
  poststart                 start, runtime namespace, after the process started
  poststop                  delete, runtime namespace, after the container is gone

A failing hook of the first four kinds aborts the operation; poststart and
poststop failures are warnings, as the spec requires.

The state on stdin carries the status the spec gives the hook's moment
(``STATUS``; runtime-spec 1.3 runtime.md "State" and "Lifecycle"): "creating"
is step 2 only (building the environment), "created" is after step 2 until the
user program runs, and prestart, createRuntime, createContainer (steps 3-5) and
startContainer (step 7) all come after step 2 and before it (step 8); poststart
is step 9 ("running"), poststop step 13 ("stopped"). crun gives "created" to the
first three as well (and a non-standard "starting" to startContainer); runc
gives "creating" to the first three.
"""

from __future__ import annotations

import subprocess  # only imported by code paths that have hooks to run

from runtime import fastjson
from runtime.errors import HakoError

KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
         "poststop")


#: the container status each kind of hook is told (see the module docstring)
STATUS = {"prestart": "created", "createRuntime": "created", "createContainer": "created",
          "startContainer": "created", "poststart": "running", "poststop": "stopped"}


def has(hooks: dict | None, *kinds: str) -> bool:
    return bool(hooks) and any(hooks.get(k) for k in kinds)


def run(kind: str, hooks: dict | None, state: dict) -> None:
    """Run every hook of ``kind`` in order; the first failure raises HakoError."""
    state = {**state, "status": STATUS[kind]}
    for i, hook in enumerate((hooks or {}).get(kind) or []):
        _run_one(f"hooks.{kind}[{i}]", hook, state)


def run_warn(kind: str, hooks: dict | None, state: dict) -> None:
    """Run every hook of ``kind``; failures are logged and the rest still run."""
    from runtime import log
    state = {**state, "status": STATUS[kind]}
    for i, hook in enumerate((hooks or {}).get(kind) or []):
        try:
            _run_one(f"hooks.{kind}[{i}]", hook, state)
        except HakoError as e:
            log.warn(str(e))


def _run_one(where: str, hook: dict, state: dict) -> None:
    path = hook["path"]
    args = hook.get("args") or [path]
    env = {}
    for kv in hook.get("env") or []:
        k, _, v = kv.partition("=")
        env[k] = v
    timeout = hook.get("timeout")
    data = fastjson.dumps(state).encode()
    try:
        proc = subprocess.Popen(args, executable=path, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                close_fds=True, cwd="/")
    except OSError as e:
        raise HakoError(f"{where}: cannot run {path}: {e.strerror}") from None
    try:
        _, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise HakoError(f"{where}: {path} timed out after {timeout}s and was killed") from None
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip().splitlines()
        why = f": {detail[-1]}" if detail else ""
        if proc.returncode < 0:
            raise HakoError(f"{where}: {path} was killed by signal {-proc.returncode}{why}")
        raise HakoError(f"{where}: {path} exited with status {proc.returncode}{why}")


def state_for(state: dict, pid: int | None = None) -> dict:
    """The OCI state document a hook sees; run/run_warn add the status of its
    kind (STATUS), so no caller can tell a hook another one."""
    out = {k: state[k] for k in ("ociVersion", "id", "bundle") if k in state}
    if pid is not None:
        out["pid"] = pid
    if state.get("annotations"):
        out["annotations"] = state["annotations"]
    return out

