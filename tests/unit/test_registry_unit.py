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
from hypothesis import given, settings
from hypothesis import strategies as st

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


FAKE_HELPER = """#!/bin/sh
# docker-credential-fake: answers from environment variables, logs its calls
read -r server || true
echo "$1 $server" >> "$FAKE_LOG"
case "$1:$FAKE_MODE" in
  get:user) printf '{"ServerURL":"%s","Username":"helper-user","Secret":"s3cret"}' "$server";;
  get:token) printf '{"ServerURL":"%s","Username":"<token>","Secret":"refresh"}' "$server";;
  get:empty) printf '{"ServerURL":"%s","Username":"","Secret":""}' "$server";;
  get:slow) sleep 5;;
  store:*|erase:user) ;;
  *) echo "credentials not found in native keychain"; exit 1;;
esac
"""


@pytest.fixture
def fake_helper(tmp_path, monkeypatch):
    """docker-credential-fake on PATH; HOME and XDG_RUNTIME_DIR of the test's own."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    prog = bindir / "docker-credential-fake"
    prog.write_text(FAKE_HELPER)
    prog.chmod(0o755)
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    (home / ".docker").mkdir(parents=True)
    (xdg / "containers").mkdir(parents=True)
    for k, v in {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": home, "XDG_RUNTIME_DIR": xdg,
                 "FAKE_LOG": tmp_path / "log", "FAKE_MODE": "user"}.items():
        monkeypatch.setenv(k, str(v))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    log = tmp_path / "log"

    def calls() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []
    return home / ".docker" / "config.json", xdg / "containers" / "auth.json", calls


def test_cred_helpers_order(fake_helper, monkeypatch):
    docker, podman, calls = fake_helper
    pw = base64.b64encode(b"file-user:pw").decode()
    podman.write_text(json.dumps({"credHelpers": {"https://reg.io/v1/": "fake"},
                                  "auths": {"reg.io": {"auth": pw}, "other.io": {"auth": pw}}}))
    c = regauth.lookup("reg.io", "a/b")
    assert (c.user, c.password, c.identity_token) == ("helper-user", "s3cret", False)
    assert "docker-credential-fake" in c.source and "s3cret" not in repr(c)
    assert calls() == ["get https://reg.io/v1/"]  # the key as the file wrote it
    assert regauth.lookup("other.io").user == "file-user"  # no helper named for it
    monkeypatch.setenv("FAKE_MODE", "empty")  # the helper has nothing: the next file
    assert regauth.lookup("reg.io") is None
    docker.write_text(json.dumps({"auths": {"reg.io": {"auth": pw}}}))
    assert regauth.lookup("reg.io").source == str(docker)
    # docker's credsStore: after the file's own entries; docker.io as docker names it
    docker.write_text(json.dumps({"credsStore": "fake", "auths": {"x.io": {}}}))
    podman.unlink()
    monkeypatch.setenv("FAKE_MODE", "token")
    c = regauth.lookup("docker.io", "library/busybox")
    assert c.identity_token and c.password == "refresh"
    assert calls()[-1] == "get https://index.docker.io/v1/"
    with pytest.raises(HakoError, match="identity token"):
        c.basic()


def test_cred_helpers_login_logout(fake_helper, monkeypatch):
    docker, podman, calls = fake_helper
    podman.write_text(json.dumps({"credHelpers": {"reg.io": "fake"}}))
    where = regauth.store_login("reg.io", regauth.Credentials("u", "p", "t"))
    assert where == "docker-credential-fake" and len(calls()) == 1
    action, _, sent = calls()[0].partition(" ")
    assert action == "store" and json.loads(sent) == {"ServerURL": "reg.io", "Username": "u",
                                                      "Secret": "p"}
    assert json.loads(podman.read_text()) == {"credHelpers": {"reg.io": "fake"}}
    path, gone = regauth.remove_login("reg.io")
    assert gone == ["reg.io"] and calls()[-1] == "erase reg.io"
    monkeypatch.setenv("FAKE_MODE", "none")
    assert regauth.remove_login("reg.io")[1] == []  # the helper held nothing
    # a file with credsStore keeps docker's empty placeholder
    af = docker.parent / "af.json"
    af.write_text(json.dumps({"credsStore": "fake", "auths": {"a.io": {}, "b.io": {}}}))
    regauth.store_login("c.io", regauth.Credentials("u", "p", "t"), str(af))
    assert json.loads(af.read_text())["auths"] == {"a.io": {}, "b.io": {}, "c.io": {}}
    monkeypatch.setenv("FAKE_MODE", "user")
    _, gone = regauth.remove_login(None, str(af))
    assert gone == ["a.io", "b.io", "c.io"] and json.loads(af.read_text())["auths"] == {}


@pytest.mark.parametrize("doc,match", [
    ({"credHelpers": {"reg.io": "absent"}}, "docker-credential-absent is not in \\$PATH"),
    ({"credHelpers": {"reg.io": "a/b"}}, "not a credential helper name"),
    ({"credHelpers": {"reg.io": ""}}, "not a credential helper name"),
    ({"credsStore": ["fake"]}, "credsStore: .* not a credential helper name"),
])
def test_cred_helper_config_errors(fake_helper, doc, match):
    _, podman, _ = fake_helper
    podman.write_text(json.dumps(doc))
    with pytest.raises(HakoError, match=match) as e:
        regauth.lookup("reg.io")
    assert str(podman) in str(e.value) and "\n" not in str(e.value)


def test_cred_helper_answers(fake_helper, monkeypatch):
    from runtime.image import credhelper
    monkeypatch.setenv("FAKE_MODE", "none")
    assert credhelper.get("fake", "reg.io", "w") is None
    monkeypatch.setattr(credhelper, "TIMEOUT", 0.5)
    monkeypatch.setenv("FAKE_MODE", "slow")
    with pytest.raises(HakoError, match="did not answer in 0s|did not answer in 1s"):
        credhelper.get("fake", "reg.io", "w")


@given(st.text(max_size=20))
@settings(max_examples=200, deadline=None)
def test_cred_helper_names_are_never_paths(name):
    from runtime.image import credhelper
    try:
        got = credhelper.check_name(name, "w")
    except HakoError:
        return
    assert got == name and "/" not in name and "\0" not in name and name not in (".", "..")


@pytest.mark.parametrize("urls,match", [
    ("http://x/y", "expected a list of URLs"),
    ([1], "expected a list of URLs"),
    (["file:///etc/passwd"], "not an http\\(s\\) URL"),
    (["https://x/y#frag"], "not an http\\(s\\) URL"),
    (["https://x/a b"], "not an http\\(s\\) URL"),
])
def test_layer_urls_refused(urls, match):
    from runtime.image import pull
    with pytest.raises(HakoError, match=match) as e:
        pull._urls(urls, "img: layers[1].urls")
    assert str(e.value).startswith("img: layers[1].urls: ")


def test_layer_urls_kept_in_order():
    from runtime.image import pull
    assert pull._urls(None, "w") == ()
    assert pull._urls(["https://a/1", "http://b/2"], "w") == ("https://a/1", "http://b/2")


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
