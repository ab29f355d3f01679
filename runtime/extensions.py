"""Lifecycle extensions: concerns that join a container's life at fixed
points without create or delete naming them.

Layered storage (``hako bundle --image``) and networking (slirp4netns/pasta)
are the two today; a systemd scope, idmapped mounts or a volume driver would
be the next, added here and nowhere else in the lifecycle. An extension is
switched on by an annotation prefix in config.json, recorded in the
container's state, so that a hot verb (``delete``) imports an implementation
only for a container that uses it.

The points, in the order create reaches them:

``plan(spec, ctx)``  classmethod, in the parent before anything exists:
                     validate, adjust the spec in place (hooks, mounts) and
                     return the extension, or None when it has nothing to do.
                     Raises HakoError; nothing is left to undo.
``prepare()``        in the parent, once the state directory exists and
                     before the init starts (write files the spec refers to).
``in_init(spec)``    in the container's init, inside its namespaces, before
                     the rootfs is set up (mount layers). Imports nothing:
                     the modules were imported before fork.
``cleanup()``        on delete, and on a create that failed after prepare;
                     never raises (problems are warnings); safe to repeat.

``from_state(ctx, annotations)`` rebuilds an extension for delete (and for
the leftovers of an interrupted create) from what state.json recorded.
"""

from __future__ import annotations


class Context:
    """Where a container lives: enough for any extension to find its files.
    (A plain class: ``typing.NamedTuple`` would cost create ~2 ms of imports.)"""

    __slots__ = ("cid", "state_dir", "bundle")

    def __init__(self, cid: str, state_dir: str, bundle: str) -> None:
        self.cid = cid
        self.state_dir = state_dir
        self.bundle = bundle


class Extension:
    """The interface; every step defaults to nothing."""

    #: the name state.json records
    name = ""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @classmethod
    def plan(cls, spec: dict, ctx: Context) -> "Extension | None":
        raise NotImplementedError

    @classmethod
    def from_state(cls, ctx: Context, annotations: dict) -> "Extension":
        return cls(ctx)

    def prepare(self) -> None:
        pass

    def in_init(self, spec: dict) -> None:
        pass

    def cleanup(self) -> None:
        pass


class Registered:
    __slots__ = ("name", "annotation_prefix", "impl")

    def __init__(self, name: str, annotation_prefix: str, impl: str) -> None:
        self.name = name
        #: the extension is considered when an annotation starts with this
        self.annotation_prefix = annotation_prefix
        #: "module:Class", imported only when considered
        self.impl = impl


REGISTRY: tuple[Registered, ...] = (
    Registered("layered-rootfs", "io.hako.rootfs.", "runtime.image.lifecycle:LayeredRootfs"),
    Registered("network", "io.hako.network", "hooks.network.lifecycle:Networking"),
)


def _load(entry: Registered) -> type[Extension]:
    import importlib  # only for a config that asks for an extension (~0.4 ms)
    module, _, attr = entry.impl.partition(":")
    return getattr(importlib.import_module(module), attr)


def _wanted(annotations: dict | None) -> list[Registered]:
    keys = tuple(annotations or ())
    return [e for e in REGISTRY if any(k.startswith(e.annotation_prefix) for k in keys)]


def plan_all(spec: dict, ctx: Context) -> list[Extension]:
    """Every extension the config asks for, planned in registry order."""
    out = []
    for entry in _wanted(spec.get("annotations")):
        ext = _load(entry).plan(spec, ctx)
        if ext is not None:
            ext.name = entry.name
            out.append(ext)
    return out


def from_state(ctx: Context, names: list[str] | None, annotations: dict | None) -> list[Extension]:
    """The extensions a container recorded (``names``; None: an older state
    without the record, decided from its annotations again)."""
    entries = (_wanted(annotations) if names is None
               else [e for e in REGISTRY if e.name in names])
    out = []
    for entry in entries:
        ext = _load(entry).from_state(ctx, annotations or {})
        ext.name = entry.name
        out.append(ext)
    return out


def cleanup_all(exts: list[Extension]) -> None:
    """In reverse order of planning, as an unwind."""
    for ext in reversed(exts):
        ext.cleanup()
