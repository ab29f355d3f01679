"""Registry image references (``busybox``, ``library/busybox:1.36``,
``localhost:5000/x@sha256:...``, ``docker://quay.io/a/b``), as docker and
podman spell them (distribution's reference grammar).

A name whose first component has a ``.`` or ``:`` or is ``localhost`` is
*qualified* (it names its registry); any other name is a *short name*,
resolved through containers-registries.conf(5) by ``regconf``. docker.io
names with one component get ``library/``.
"""

from __future__ import annotations

import re

from runtime.errors import HakoError
from runtime.image import digest as D

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])"
                   r"(?::[0-9]+)?\Z")


class ReferenceError_(HakoError):
    pass


class Reference:
    """registry/repository[:tag][@digest]; registry None for a short name."""

    __slots__ = ("registry", "repository", "tag", "digest")

    def __init__(self, registry: str | None, repository: str, tag: str | None,
                 digest: str | None) -> None:
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest

    @property
    def qualified(self) -> bool:
        return self.registry is not None

    @property
    def name(self) -> str:
        """registry/repository (or the short repository)."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest when given, else the tag."""
        return self.digest or self.tag or "latest"

    def with_registry(self, registry: str) -> "Reference":
        repo = self.repository
        if registry == DOCKER_HUB and "/" not in repo:
            repo = "library/" + repo
        return Reference(registry, repo, self.tag, self.digest)

    def with_name(self, name: str) -> "Reference":
        """The same tag/digest under another registry/repository."""
        reg, _, repo = name.partition("/")
        return Reference(reg, repo, self.tag, self.digest)

    def tagged(self) -> "Reference":
        """latest when neither tag nor digest was given (what docker pulls)."""
        if self.tag or self.digest:
            return self
        return Reference(self.registry, self.repository, "latest", None)

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    def __repr__(self) -> str:
        return f"Reference({str(self)!r})"


def strip_transport(text: str) -> str:
    return text[len("docker://"):] if text.startswith("docker://") else text


def looks_like_registry(first: str) -> bool:
    return "." in first or ":" in first or first == "localhost" or first.startswith("[")


def parse(text: str) -> Reference:
    """Parse one reference; one clear line when it is not one."""
    orig = text
    text = strip_transport(text)
    what = f"image reference {orig!r}"
    if not text:
        raise ReferenceError_(f"{what}: empty")
    digest = None
    if "@" in text:
        text, _, digest = text.partition("@")
        D.parse(digest, what)
    registry = None
    first, sep, rest = text.partition("/")
    if sep and looks_like_registry(first):
        if not _HOST.match(first):
            raise ReferenceError_(f"{what}: {first!r} is not a registry host[:port]")
        registry, text = first, rest
    tag = None
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, _, tag = text.rpartition(":")
        if not _TAG.match(tag):
            raise ReferenceError_(f"{what}: invalid tag {tag!r}")
    if not text:
        raise ReferenceError_(f"{what}: no repository name")
    for comp in text.split("/"):
        if not _COMPONENT.match(comp):
            hint = " (repository names are lowercase)" if comp.lower() != comp else ""
            raise ReferenceError_(f"{what}: invalid repository name component {comp!r}{hint}")
    if len(text) + len(registry or "") > 255:
        raise ReferenceError_(f"{what}: name longer than 255 characters")
    if registry == "index.docker.io":
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in text:
        text = "library/" + text
    return Reference(registry, text, tag, digest)


def is_registry_ref(text: str) -> bool:
    """Could *text* be a registry reference (rather than a file)?"""
    if text.startswith("docker://"):
        return True
    try:
        parse(text)
        return True
    except HakoError:
        return False


def api_host(registry: str) -> str:
    """The host the API lives on (docker.io's is another one)."""
    return DOCKER_HUB_API if registry == DOCKER_HUB else registry


def is_localhost(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
    return host in ("localhost", "127.0.0.1", "[::1]") or host.startswith("127.")
