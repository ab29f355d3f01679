"""Layered root filesystems (``hako bundle --image``) as a lifecycle extension:
the init mounts the layers on the bundle's rootfs before the rootfs is set
up; delete stops fuse-overlayfs and removes the read-write layer."""

from __future__ import annotations

from runtime.extensions import Context, Extension
from runtime.image import drivers


class LayeredRootfs(Extension):
    def __init__(self, ctx: Context, annotations: dict) -> None:
        super().__init__(ctx)
        self.annotations = annotations

    @classmethod
    def plan(cls, spec: dict, ctx: Context) -> "LayeredRootfs | None":
        ann = spec.get("annotations") or {}
        return cls(ctx, ann) if ann.get(drivers.ANN_DRIVER) else None

    @classmethod
    def from_state(cls, ctx: Context, annotations: dict) -> "LayeredRootfs":
        return cls(ctx, annotations)

    def in_init(self, spec: dict) -> None:
        drivers.mount_root(spec, self.ctx.bundle, self.ctx.state_dir)

    def cleanup(self) -> None:
        drivers.cleanup(self.ctx.state_dir, self.ctx.cid, self.ctx.bundle, self.annotations)
