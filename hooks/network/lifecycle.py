"""Rootless networking (slirp4netns / pasta) as a lifecycle extension: the
plan adds its hooks and resolv.conf mount to the spec, prepare writes the
resolv.conf, cleanup stops the supervisor and the helper."""

from __future__ import annotations

from runtime.errors import HakoError
from runtime.extensions import Context, Extension


class Networking(Extension):
    def __init__(self, ctx: Context, plan=None) -> None:
        super().__init__(ctx)
        self.net = plan

    @classmethod
    def plan(cls, spec: dict, ctx: Context) -> "Networking | None":
        from hooks import network
        try:
            net = network.plan(spec, ctx.state_dir, ctx.bundle)
        except network.NetworkError as e:
            raise HakoError(str(e)) from None
        if net is None:
            return None
        net.apply(spec)  # its createRuntime/createContainer hooks, resolv.conf mount
        return cls(ctx, net)

    def prepare(self) -> None:
        if self.net is not None:
            self.net.prepare()

    def cleanup(self) -> None:
        from hooks import network
        network.cleanup(self.ctx.state_dir)
