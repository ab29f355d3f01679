"""Load and check a bundle's config.json: the API the runtime uses (standard library only).

    from spec.config import ConfigError, load_config
    try:
        config = load_config(bundle)          # plain dict, exactly as parsed
    except ConfigError as e:
        die(f"config.json: {e}")              # e.g. "linux.uidMappings[0].size: must be ≥ 1"

Checks run in this order and stop at the first problem:

1. the file exists and is JSON (message carries line and column);
2. ``ociVersion`` is SemVer and within the versions hako implements;
3. the generated schema (spec/config.schema.json, see spec.models): types, enums, bounds;
4. Linux rules the schema cannot express, each a MUST/REQUIRED of runtime-spec v1.3.0
   (config.md, config-linux.md), plus deliberate hako rules: mount destinations must
   be absolute (the spec only deprecates relative ones; see ``_check_mounts``), and no
   string holds a NUL character (``_check_nul``).

Why stdlib only: this runs on every ``hako create``; pydantic would add ~0.25 s.
"""

import os

from runtime import fastjson

from spec.validate import first_error, format_path, load_schema

CONFIG_SCHEMA = "config.schema.json"
STATE_SCHEMA = "state.schema.json"
#: Runtime-spec versions hako implements: any 1.x release up to 1.3 (patch level free).
SUPPORTED = "1.x; written for 1.0.0 to 1.3.0"
HOOK_STAGES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


class ConfigError(Exception):
    """An unusable config.json.  ``str()`` is one line, without a ``config.json:`` prefix:
    ``<path>: <reason>`` when the problem has a JSON path, else just ``<reason>``."""

    def __init__(self, reason: str, path: str = "") -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


def load_config(bundle_dir: str) -> dict:
    """Read, parse and validate ``<bundle_dir>/config.json``; return the parsed dict unchanged."""
    try:
        with open(os.path.join(bundle_dir, "config.json"), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(f"no such file in bundle {bundle_dir}") from None
    except IsADirectoryError:
        raise ConfigError(f"is a directory, not a file, in bundle {bundle_dir}") from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}") from None
    config = parse_json(data)
    validate_config(config)
    assert isinstance(config, dict)  # validate_config proved it
    return config


def parse_json(data: bytes | str) -> object:
    """Decode strict JSON (no NaN/Infinity), turning every failure into a ConfigError."""
    try:
        return fastjson.loads(data)  # the C scanner json uses, without importing json/re
    except (ValueError, RecursionError):
        pass  # say exactly what is wrong: json's messages have line and column
    import json
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ConfigError(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError:
        raise ConfigError("invalid JSON: the file is not UTF-8 text") from None
    except RecursionError:
        raise ConfigError("invalid JSON: nested too deeply") from None


def _reject_constant(name: str) -> object:
    raise ConfigError(f"invalid JSON: {name} is not a JSON value")


def validate_config(config: object) -> None:
    """Raise ConfigError for the first problem in an already-parsed config, else return."""
    if isinstance(config, dict) and isinstance(config.get("ociVersion"), str):
        _check_version(config["ociVersion"])
    err = first_error(config, load_schema(CONFIG_SCHEMA))
    if err is not None:
        raise ConfigError(err[1], err[0])
    if isinstance(config, dict):  # always, once the schema passed
        _check_semantics(config)


def validate_state(state: object) -> None:
    """Check a ``state`` document against spec/state.schema.json (used by tests)."""
    err = first_error(state, load_schema(STATE_SCHEMA))
    if err is not None:
        raise ConfigError(err[1], err[0])


# --- ociVersion -----------------------------------------------------------------------


def parse_semver(text: str) -> tuple[int, int, int] | None:
    """``(major, minor, patch)`` of a SemVer 2.0.0 string, or None if it is not one."""
    core, plus, build = text.partition("+")
    core, dash, pre = core.partition("-")
    if plus and not all(_ident(p) for p in build.split(".")):
        return None
    if dash and not all(_ident(p) and not _leading_zero(p) for p in pre.split(".")):
        return None
    nums = core.split(".")
    if len(nums) != 3 or not all(n.isascii() and n.isdigit() and not _leading_zero(n) for n in nums):
        return None
    return int(nums[0]), int(nums[1]), int(nums[2])


def _ident(part: str) -> bool:
    return bool(part) and part.isascii() and all(c.isalnum() or c == "-" for c in part)


def _leading_zero(part: str) -> bool:
    return len(part) > 1 and part[0] == "0" and part.isdigit()


def _check_version(version: str) -> None:
    parsed = parse_semver(version)
    if parsed is None:
        raise ConfigError(f"{fastjson.dumps(version)} is not a SemVer 2.0.0 version", "ociVersion")
    # any 1.x: a newer minor only adds properties, which are ignored as the spec demands
    if parsed[0] != 1 or parsed < (1, 0, 0):
        raise ConfigError(
            f"unsupported version {fastjson.dumps(version)} (hako supports {SUPPORTED})", "ociVersion"
        )


# --- rules the schema cannot express ----------------------------------------------------


def _check_semantics(config: dict) -> None:
    _check_nul({k: v for k, v in config.items() if k not in ("annotations", "process")}, [])
    _check_nul({k: v for k, v in (config.get("annotations") or {}).items()
                if k.startswith("io.hako.")}, ["annotations"])
    root = config.get("root")
    if root is None:  # config.md: REQUIRED on every platform but Hyper-V containers
        raise ConfigError("is required", "root")
    if not root["path"]:
        raise ConfigError("must not be empty", "root.path")
    linux = config.get("linux") or {}
    namespaces = linux.get("namespaces") or []
    _check_namespaces(namespaces)
    if "process" in config:
        _check_process(config["process"])
    _check_mounts(config.get("mounts") or [], any(ns["type"] == "user" for ns in namespaces))
    hooks = config.get("hooks") or {}
    for stage in HOOK_STAGES:  # config.md: a hook path MUST be absolute
        for i, hook in enumerate(hooks.get(stage) or []):
            _absolute(hook["path"], f"hooks.{stage}[{i}].path")
    _check_linux(linux)


def _absolute(path: str, where: str) -> None:
    if not path.startswith("/"):
        raise ConfigError("must be an absolute path", where)


def _check_nul(node: object, path: list) -> None:
    """Every string hako hands the kernel (argv, environment, paths, names) is a
    C string: an embedded NUL would cut it short or fail execve/mount late with
    no useful message, so it is refused here, by its JSON path. Annotations are
    opaque data (only hako's own io.hako.* ones are checked)."""
    todo = [(node, path)]
    while todo:
        value, where = todo.pop()
        if type(value) is str:
            if "\0" in value:
                raise ConfigError("contains a NUL character (\\u0000), which no argument, "
                                  "environment entry, path or name can hold", format_path(where))
        elif type(value) is dict:
            for key in value:
                if "\0" in key:
                    raise ConfigError("the key contains a NUL character (\\u0000)",
                                      format_path(where + [key]))
            # reversed onto the stack: the first NUL in document order is reported
            todo.extend((value[k], where + [k]) for k in reversed(list(value)))
        elif type(value) is list:
            todo.extend((value[i], where + [i]) for i in range(len(value) - 1, -1, -1))


def _check_process(process: dict) -> None:
    _check_nul(process, ["process"])
    args = process.get("args")
    if args is None:  # config.md: at least one entry is REQUIRED (non-Windows)
        raise ConfigError("is required", "process.args")
    if not args:
        raise ConfigError("must not be empty", "process.args")
    _absolute(process["cwd"], "process.cwd")
    seen: set[str] = set()
    for i, rlimit in enumerate(process.get("rlimits") or []):
        if rlimit["type"] in seen:
            raise ConfigError(f"duplicate rlimit {fastjson.dumps(rlimit['type'])}", f"process.rlimits[{i}].type")
        seen.add(rlimit["type"])


def _check_namespaces(namespaces: list) -> None:
    seen: set[str] = set()
    for i, ns in enumerate(namespaces):
        if ns["type"] in seen:
            raise ConfigError(f"duplicate namespace {fastjson.dumps(ns['type'])}", f"linux.namespaces[{i}].type")
        seen.add(ns["type"])
        if "path" in ns:
            _absolute(ns["path"], f"linux.namespaces[{i}].path")


def _check_mounts(mounts: list, user_namespace: bool) -> None:
    for i, mount in enumerate(mounts):
        # runtime-spec v1.3.0 lets Linux destinations be relative to "/" (deprecated);
        # the rootfs code resolves them that way, as runc does.
        has_uid, has_gid = "uidMappings" in mount, "gidMappings" in mount
        if has_uid != has_gid:  # config.md: "MUST be specified along with"
            missing, given = ("gidMappings", "uidMappings") if has_uid else ("uidMappings", "gidMappings")
            raise ConfigError(f"is required when {given} is set", f"mounts[{i}].{missing}")
        if has_uid or user_namespace:
            continue
        for j, option in enumerate(mount.get("options") or []):
            if option in ("idmap", "ridmap"):  # config.md: no mappings, no userns: MUST fail
                raise ConfigError(
                    f'"{option}" needs uidMappings and gidMappings or a user namespace',
                    f"mounts[{i}].options[{j}]",
                )


def _check_linux(linux: dict) -> None:
    for i, dev in enumerate(linux.get("devices") or []):
        if dev["type"] != "p":  # config-linux.md: major, minor REQUIRED unless type is p
            for key in ("major", "minor"):
                if key not in dev:
                    raise ConfigError(
                        f'is required for device type "{dev["type"]}"', f"linux.devices[{i}].{key}"
                    )
    for key in ("maskedPaths", "readonlyPaths"):  # config-linux.md: MUST be absolute
        for i, path in enumerate(linux.get(key) or []):
            _absolute(path, f"linux.{key}[{i}]")
    resources = linux.get("resources") or {}
    for name, limits in (resources.get("rdma") or {}).items():
        if "hcaHandles" not in limits and "hcaObjects" not in limits:
            where = format_path(["linux", "resources", "rdma", name])
            raise ConfigError("must set hcaHandles or hcaObjects", where)
    for i, dev in enumerate((resources.get("blockIO") or {}).get("weightDevice") or []):
        if "weight" not in dev and "leafWeight" not in dev:
            raise ConfigError("must set weight or leafWeight", f"linux.resources.blockIO.weightDevice[{i}]")
    seccomp = linux.get("seccomp") or {}
    if "listenerMetadata" in seccomp and "listenerPath" not in seccomp:
        raise ConfigError("must not be set without listenerPath", "linux.seccomp.listenerMetadata")
    personality = linux.get("personality")
    if personality is not None and "domain" not in personality:
        raise ConfigError("is required", "linux.personality.domain")
