"""Registry pieces without a registry: references, registries.conf, auth
files, WWW-Authenticate challenges, Retry-After."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runtime.errors import HakoError  # noqa: E402
from runtime.image import reference as R  # noqa: E402
from runtime.image import regauth, regconf  # noqa: E402
from runtime.image.registry import _retry_after, parse_challenge  # noqa: E402

D64 = "sha256:" + "a" * 64


@pytest.mark.parametrize("text,registry,repo,tag,digest", [
    ("busybox", None, "busybox", None, None),
    ("library/busybox:1.36", None, "library/busybox", "1.36", None),
    ("docker.io/busybox", "docker.io", "library/busybox", None, None),
    ("index.docker.io/x/y:2", "docker.io", "x/y", "2", None),
    ("localhost/app", "localhost", "app", None, None),
    ("localhost:5000/x@" + D64, "localhost:5000", "x", None, D64),
    ("quay.io/a/b/c:t@" + D64, "quay.io", "a/b/c", "t", D64),
    ("docker://127.0.0.1:5000/a-b_c.d/e__f:v1.0", "127.0.0.1:5000", "a-b_c.d/e__f", "v1.0", None),
    ("[::1]:5000/x", "[::1]:5000", "x", None, None),
])
def test_references(text, registry, repo, tag, digest):
    r = R.parse(text)
    assert (r.registry, r.repository, r.tag, r.digest) == (registry, repo, tag, digest)
    assert r.tagged().reference == (digest or tag or "latest")


@pytest.mark.parametrize("text,why", [
    ("", "empty"), ("Busybox", "lowercase"), ("a//b", "component"), ("x:bad tag", "tag"),
    ("x@sha256:abc", "malformed"), ("x@md5:" + "a" * 32, "algorithm"), ("-x", "component"),
    ("reg.io/", "no repository"),
])
def test_bad_references(text, why):
    with pytest.raises(HakoError, match=why):
        R.parse(text)


def _conf(tmp_path: Path, text: str, dropin: str | None = None) -> regconf.RegistriesConf:
    p = tmp_path / "registries.conf"
    p.write_text(text)
    if dropin is not None:
        (tmp_path / "registries.conf.d").mkdir()
        (tmp_path / "registries.conf.d" / "10-x.conf").write_text(dropin)
    os.environ["CONTAINERS_REGISTRIES_CONF"] = str(p)
    try:
        return regconf.RegistriesConf.load()
    finally:
        del os.environ["CONTAINERS_REGISTRIES_CONF"]


def test_search_registries_aliases_and_dropins(tmp_path):
    c = _conf(tmp_path, 'unqualified-search-registries = ["a.io", "docker.io"]\n',
              '[aliases]\n"bb" = "quay.io/x/busybox"\n')
    assert [str(x) for x in c.candidates(R.parse("busybox:1"))] == \
        ["a.io/busybox:1", "docker.io/library/busybox:1"]
    assert [str(x) for x in c.candidates(R.parse("bb"))] == ["quay.io/x/busybox"]
    assert [str(x) for x in c.candidates(R.parse("q.io/x"))] == ["q.io/x"]
    assert regconf.RegistriesConf().search_registries() == ["docker.io"]  # none configured
    sub = tmp_path / "empty"
    sub.mkdir()
    c = _conf(sub, "unqualified-search-registries = []\n")
    with pytest.raises(HakoError, match="no unqualified-search-registries"):
        c.candidates(R.parse("busybox"))


def test_mirrors_rewrites_insecure_blocked(tmp_path):
    c = _conf(tmp_path, """
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "m1.local:5000/hub"
insecure = true
[[registry.mirror]]
location = "m2.local"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "example.com/team"
location = "internal.example.com/mirror/team"

[[registry]]
prefix = "*.bad.io"
blocked = true

[registries.insecure]
registries = ["old.local:5000"]
""")
    eps = c.endpoints(R.parse("docker.io/library/busybox:1"))
    assert [(str(e.ref), e.insecure, e.mirror) for e in eps] == [
        ("m1.local:5000/hub/library/busybox:1", True, True),
        ("docker.io/library/busybox:1", False, False)]
    eps = c.endpoints(R.parse("docker.io/library/busybox@" + D64))
    assert [e.ref.registry for e in eps] == ["m1.local:5000", "m2.local", "docker.io"]
    eps = c.endpoints(R.parse("example.com/team/app:2"))
    assert [str(e.ref) for e in eps] == ["internal.example.com/mirror/team/app:2"]
    assert [str(e.ref) for e in c.endpoints(R.parse("example.com/teamx/app"))] == \
        ["example.com/teamx/app"]
    with pytest.raises(HakoError, match="blocked"):
        c.endpoints(R.parse("x.bad.io/a"))
    assert c.insecure("old.local:5000") and not c.insecure("docker.io")


def test_bad_registries_conf(tmp_path):
    with pytest.raises(HakoError, match="not valid TOML"):
        _conf(tmp_path, "unqualified-search-registries = [")
    with pytest.raises(HakoError, match="list of strings"):
        _conf(tmp_path, "unqualified-search-registries = 3")


def test_challenges_and_retry_after():
    assert parse_challenge('Bearer realm="https://auth.io/token",service="reg.io",'
                           'scope="repository:a/b:pull,push"') == (
        "bearer", {"realm": "https://auth.io/token", "service": "reg.io",
                   "scope": "repository:a/b:pull,push"})
    assert parse_challenge('Basic realm="x \\"y\\""') == ("basic", {"realm": 'x "y"'})
    assert _retry_after("3", 0) == 3.0
    assert _retry_after("100000", 0) == 30.0  # capped
    assert 0 <= _retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                           time.gmtime(time.time() + 2)), 0) <= 3
    assert _retry_after("garbage", 1) == 0.5


def test_auth_files_order_and_formats(tmp_path, monkeypatch):
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    (home / ".docker").mkdir(parents=True)
    (xdg / "containers").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)

    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": b64("hub:pw1")},
        "reg.io": {"auth": b64("docker:pw2")}}}))
    assert regauth.lookup("docker.io", "library/x").user == "hub"
    assert regauth.lookup("reg.io", "a/b").user == "docker"
    assert regauth.lookup("other.io", "a") is None
    (xdg / "containers" / "auth.json").write_text(json.dumps({"auths": {
        "reg.io": {"auth": b64("podman:pw3")},
        "reg.io/team/app": {"auth": b64("narrow:pw:with:colons")}}}))
    assert regauth.lookup("reg.io", "a/b").user == "podman"
    c = regauth.lookup("reg.io", "team/app")
    assert (c.user, c.password) == ("narrow", "pw:with:colons")
    assert "pw" not in repr(c) and "pw" not in str(c)
    # login writes the runtime file, 0600; logout removes the registry's entries
    p = regauth.store_login("new.io:5000", regauth.Credentials("u", "p", "t"))
    assert p == str(xdg / "containers" / "auth.json")
    assert oct(os.stat(p).st_mode & 0o777) == "0o600"
    assert regauth.lookup("new.io:5000").user == "u"
    _, gone = regauth.remove_login("reg.io")
    assert sorted(gone) == ["reg.io", "reg.io/team/app"]
    assert regauth.lookup("reg.io", "a").user == "docker"  # docker's file now
    (xdg / "containers" / "auth.json").write_text('{"auths": {"x.io": {"auth": "!!"}}}')
    with pytest.raises(HakoError, match="not base64"):
        regauth.lookup("x.io")


def test_no_runtime_verb_imports_the_registry_client():
    """Only `images` and `bundle` load HTTP/TLS: not the lifecycle verbs, nor the
    image modules the container init uses."""
    import subprocess
    verbs = ["create", "start", "state", "kill", "delete", "exec", "run", "list", "ps",
             "pause", "resume", "update", "events", "layers"]
    code = ("import sys\n" + "".join(f"import runtime.commands.{v}\n" for v in verbs)
            + "import runtime.image.drivers, runtime.image.store, runtime.image.bundle\n"
            "print([m for m in ('ssl', 'http.client', 'tomllib', 'runtime.image.httpc', "
            "'runtime.image.registry', 'runtime.image.pull') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout
