"""What hako refuses before anything is made: configs it cannot honour.

Each refusal is one line naming the config's JSON path (or the flag), and
comes before a state directory, cgroup or process exists.
"""

import os

from runtime.errors import HakoError


def check_supported(spec: dict, launch, *, console_socket: str | None, detach: bool,
                     rootless: bool) -> None:
    """Refuse, before anything is made, what hako cannot honour."""
    plan = launch.plan
    linux = spec.get("linux") or {}
    proc = spec.get("process") or {}
    if not proc.get("args"):
        raise HakoError("config.json: process.args: a container needs a process to run")
    if rootless and os.geteuid() != 0 and not plan.has("user"):
        raise HakoError("config.json: linux.namespaces: a rootless container needs a user "
                        'namespace (add {"type": "user"}, or run `hako spec --rootless`)')
    if not plan.has("mount"):
        raise HakoError('config.json: linux.namespaces: hako needs a mount namespace '
                        '(add {"type": "mount"})')
    if (spec.get("hostname") or spec.get("domainname")) and not plan.has("uts"):
        raise HakoError("config.json: hostname: setting a hostname needs a UTS namespace")
    if "user" in plan.new and plan.join.get("user") is None and (
            linux.get("uidMappings") is None) != (linux.get("gidMappings") is None):
        raise HakoError("config.json: linux.uidMappings: give both uidMappings and gidMappings")
    if proc.get("terminal") and not console_socket and detach:
        raise HakoError("process.terminal is true: a detached container needs --console-socket "
                        "to hand the terminal to")
    if console_socket:
        if not proc.get("terminal"):
            raise HakoError("--console-socket given, but process.terminal is false")
        from runtime.terminal import check_socket_path
        check_socket_path(console_socket)
    if launch.idmap_wanted:
        from runtime import idmapped
        try:
            idmapped.check(spec, launch, rootless=rootless)
        except HakoError as e:
            raise HakoError(f"config.json: {e}") from None
    if linux.get("intelRdt"):
        raise HakoError("config.json: linux.intelRdt: Intel RDT (resctrl) is not supported by hako")
    if linux.get("netDevices"):
        from runtime import netdevices
        try:
            netdevices.check(spec, plan, rootless=rootless)
        except HakoError as e:
            raise HakoError(f"config.json: {e}") from None
    from runtime import security
    try:
        security.check_sysctl(spec)
        security.lsm_check(spec)
        security.check_process_attrs(spec)
    except HakoError as e:
        raise HakoError(f"config.json: {e}") from None
