"""Registry TLS and authentication, root and rootless: HTTPS with a test CA
(--cert-dir, certs.d, --tls-verify=false), htpasswd basic auth and token auth
(a token server the tests run), `hako images login/logout`, credentials from
the files podman and docker write and from credential helpers (credHelpers,
credsStore; identity tokens). No secret ever reaches stdout/stderr."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

import imagebuild as ib
import registry_kit as K
from test_registry import _marker, env_of, hako, images, pull, run_image

USER, PASSWORD = "alice", "pw-Secret-42"
WRONG = "wrong-Secret-77"
IDENTITY = "id-Refresh-Secret-9"  # an OAuth2 refresh token the token server knows


@pytest.fixture(scope="session")
def auth_kit(hako_session):
    missing = K.missing_tools()
    if missing:
        pytest.skip(f"registry tests need {', '.join(missing)} (make host-deps)")
    d = Path(tempfile.mkdtemp(prefix="hako-registry-auth-", dir="/tmp"))
    os.chmod(d, 0o755)
    base = ib.layer_tar(None, base_dir=hako_session.rootfs())
    layout = ib.write_oci(d / "img", [("img", _marker(base, "secured\n"))])
    opened = []
    try:
        tls = K.make_ca(d / "ca")
        https = K.Registry(d / "https", tls=tls)
        opened.append(https)
        mtls = K.Registry(d / "mtls", tls={**tls, "require_client_cert": True})
        opened.append(mtls)
        client = d / "client"  # a certs.d directory with a client certificate
        client.mkdir()
        shutil.copy(tls["ca"], client / "ca.crt")
        shutil.copy(tls["client_cert"], client / "client.cert")
        shutil.copy(tls["client_key"], client / "client.key")
        K.push(layout, "img", f"{mtls.host}/sec/img:1", cert_dir=client)
        basic = K.Registry(d / "basic", htpasswd_file=K.htpasswd(d / "htpasswd",
                                                                  {USER: PASSWORD}))
        opened.append(basic)
        tokens = K.TokenServer(d / "tokens", {USER: PASSWORD}, identities={IDENTITY: USER})
        opened.append(tokens)
        bearer = K.Registry(d / "bearer", token=tokens)
        opened.append(bearer)
        K.push(layout, "img", f"{https.host}/sec/img:1")
        K.push(layout, "img", f"{basic.host}/sec/img:1", creds=f"{USER}:{PASSWORD}")
        K.push(layout, "img", f"{bearer.host}/sec/img:1", creds=f"{USER}:{PASSWORD}")
        K.push(layout, "img", f"{bearer.host}/public/img:1", creds=f"{USER}:{PASSWORD}")
        certs = d / "certs"  # what --cert-dir gets: the CA only
        certs.mkdir()
        shutil.copy(tls["ca"], certs / "ca.crt")
        for p in d.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        yield SimpleNamespace(https=https, mtls=mtls, basic=basic, bearer=bearer,
                              tokens=tokens, tls=tls, certs=certs, client=client)
    finally:
        for x in reversed(opened):
            x.close()
        shutil.rmtree(d, ignore_errors=True)


def no_secrets(r, *extra: str) -> None:
    """Neither the passwords nor their base64 forms nor any token were printed."""
    out = r.stdout + r.stderr
    for secret in (PASSWORD, WRONG, *extra):
        assert secret not in out, f"a secret was printed: {out}"
    for user_pw in (f"{USER}:{PASSWORD}", f"{USER}:{WRONG}"):
        assert base64.b64encode(user_pw.encode()).decode() not in out, out
    assert "Authorization" not in out and "Bearer ey" not in out


def auth_json(rt) -> Path:
    return Path(rt.xdg) / "containers" / "auth.json"


# ------------------------------------------------------------------------- TLS
def test_https_with_a_test_ca(rt, auth_kit):
    ref = f"{auth_kit.https.host}/sec/img:1"
    r = pull(rt, ref, check=False)
    assert r.returncode == 1 and "certificate verif" in r.stderr.lower(), r.stderr
    pull(rt, ref, "--cert-dir", auth_kit.certs)
    # the per-user certs.d directory
    certsd = rt.dir / "home" / ".config" / "containers" / "certs.d" / auth_kit.https.host
    certsd.mkdir(parents=True)
    shutil.copy(auth_kit.tls["ca"], certsd / "ca.crt")
    rt.chown(rt.dir / "home")
    r = pull(rt, ref)
    # verification off
    shutil.rmtree(certsd)
    pull(rt, ref, "--tls-verify=false")
    assert run_image(rt, ref, "--pull", "never") == "secured\n"


def test_client_certificates_from_certs_d(rt, auth_kit):
    ref = f"{auth_kit.mtls.host}/sec/img:1"
    r = pull(rt, ref, "--cert-dir", auth_kit.certs, check=False)  # the CA, no client cert
    assert r.returncode == 1 and "cannot reach" in r.stderr, r.stderr
    pull(rt, ref, "--cert-dir", auth_kit.client)
    bad = rt.dir / "bad-certs"
    bad.mkdir()
    shutil.copy(auth_kit.client / "client.cert", bad / "client.cert")
    rt.chown(bad)
    r = pull(rt, ref, "--cert-dir", bad, check=False)
    assert r.returncode == 1 and "without its key" in r.stderr, r.stderr


# ------------------------------------------------------------------ basic auth
def test_basic_auth_creds_login_logout(rt, auth_kit):
    ref = f"{auth_kit.basic.host}/sec/img:1"
    r = pull(rt, ref, check=False)
    assert r.returncode == 1 and "unauthorized for anonymous access" in r.stderr, r.stderr
    r = pull(rt, ref, "--creds", f"{USER}:{WRONG}", check=False, debug=True)
    assert r.returncode == 1 and "invalid username or password" in r.stderr, r.stderr
    assert len([x for x in r.stderr.splitlines() if x.startswith("hako: ") and "debug" not in x
                ]) == 1
    no_secrets(r)
    r = pull(rt, ref, "--creds", f"{USER}:{PASSWORD}", debug=True)
    no_secrets(r)
    # login: a wrong password writes nothing
    r = rt.hako("images", "login", "--username", USER, "--password-stdin", auth_kit.basic.host,
                input=WRONG + "\n", env=env_of(rt), timeout=60)
    assert r.returncode == 1 and "invalid username or password" in r.stderr, r.stderr
    no_secrets(r)
    assert not auth_json(rt).exists()
    r = rt.hako("--debug", "images", "login", "-u", USER, "--password-stdin",
                auth_kit.basic.host, input=PASSWORD + "\n", env=env_of(rt), timeout=60)
    assert r.returncode == 0 and "Login Succeeded" in r.stdout, r.stderr
    no_secrets(r)
    st = auth_json(rt).stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == rt.uid
    doc = json.loads(auth_json(rt).read_text())
    assert base64.b64decode(doc["auths"][auth_kit.basic.host]["auth"]).decode() == \
        f"{USER}:{PASSWORD}"
    r = pull(rt, ref, debug=True)  # the credentials from auth.json
    assert "credentials of alice from" in r.stderr
    no_secrets(r)
    r = hako(rt, "images", "logout", auth_kit.basic.host)
    assert r.returncode == 0, r.stderr
    assert auth_kit.basic.host not in json.loads(auth_json(rt).read_text())["auths"]
    r = hako(rt, "images", "logout", auth_kit.basic.host)
    assert r.returncode == 1 and "not logged in" in r.stderr
    r = pull(rt, ref, check=False)
    assert r.returncode == 1 and "unauthorized" in r.stderr


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_credentials_from_docker_config_and_authfile(rt, auth_kit):
    ref = f"{auth_kit.basic.host}/sec/img:1"
    env_of(rt)
    docker = rt.dir / "home" / ".docker"
    docker.mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (docker / "config.json").write_text(json.dumps(
        {"auths": {f"https://{auth_kit.basic.host}/v1/": {"auth": auth}}}))
    rt.chown(rt.dir / "home")
    r = pull(rt, ref, debug=True)
    assert ".docker/config.json" in r.stderr
    no_secrets(r)
    # --authfile wins (and is what login writes with it)
    af = rt.dir / "auth-other.json"
    r = rt.hako("images", "login", "-u", USER, "--password-stdin", "--authfile", af,
                auth_kit.basic.host, input=PASSWORD + "\n", env=env_of(rt), timeout=60)
    assert r.returncode == 0, r.stderr
    assert af.exists() and not auth_json(rt).exists()
    bad = base64.b64encode(f"{USER}:{WRONG}".encode()).decode()
    af.write_text(json.dumps({"auths": {auth_kit.basic.host: {"auth": bad}}}))
    r = pull(rt, ref, "--authfile", af, check=False)
    assert r.returncode == 1 and "invalid username or password" in r.stderr
    no_secrets(r)
    af.write_text("{not json")
    r = pull(rt, ref, "--authfile", af, check=False)
    assert r.returncode == 1 and "not valid JSON" in r.stderr and "not json" not in r.stderr


# ------------------------------------------------------------------ token auth
def test_token_auth(rt, auth_kit):
    ref = f"{auth_kit.bearer.host}/sec/img:1"
    before = len(auth_kit.tokens.issued)
    r = pull(rt, f"{auth_kit.bearer.host}/public/img:1")  # anonymous token, public repo
    r = pull(rt, ref, check=False)
    assert r.returncode == 1 and "unauthorized for anonymous access" in r.stderr, r.stderr
    r = pull(rt, ref, "--creds", f"{USER}:{WRONG}", check=False, debug=True)
    assert r.returncode == 1 and "invalid username or password" in r.stderr, r.stderr
    no_secrets(r, *auth_kit.tokens.issued)
    r = rt.hako("--debug", "images", "login", "-u", USER, "--password-stdin",
                f"https://{auth_kit.bearer.host}/", input=PASSWORD + "\n", env=env_of(rt),
                timeout=60)
    assert r.returncode == 0, r.stderr
    r = pull(rt, ref, debug=True)
    tokens = auth_kit.tokens.issued[before:]
    assert tokens, "the token server issued nothing"
    no_secrets(r, *tokens)
    assert any(q["path"] == "/token" and q["auth"] == "Basic" and
               "repository:sec/img:pull" in q["query"].get("scope", [])
               for q in auth_kit.tokens.requests)
    assert run_image(rt, ref, "--pull", "never") == "secured\n"
    names = [n for x in images(rt) for n in x["names"]]
    assert ref in names


def test_login_usage_errors(rt, auth_kit):
    r = hako(rt, "images", "login", auth_kit.basic.host)
    assert r.returncode == 2 and "--password-stdin" in r.stderr
    r = hako(rt, "images", "login", "-u", USER, "-p", "x", "--password-stdin", "a:1")
    assert r.returncode == 2
    r = hako(rt, "images", "login", "-u", USER, "--password-stdin", "bad host!")
    assert r.returncode == 2 and "not a registry" in r.stderr
    r = hako(rt, "images", "logout")
    assert r.returncode == 2


# ---------------------------------------------------------- credential helpers
HELPER = r"""#!/usr/bin/python3 -I
# docker-credential-hakotest: the helper protocol over a JSON file, as the
# docker-credential-helpers do it; every call is logged (never a secret)
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
store_path, log_path, mode_path = (os.path.join(here, n) for n in ("store.json", "calls",
                                                                  "mode"))
action = sys.argv[1] if len(sys.argv) > 1 else ""
data = sys.stdin.read()
mode = open(mode_path).read().strip() if os.path.exists(mode_path) else ""
store = json.load(open(store_path)) if os.path.exists(store_path) else {}
server = json.loads(data)["ServerURL"] if action == "store" else data.strip()
with open(log_path, "a") as f:
    f.write(f"{action} {server}\n")
if mode == "fail":
    print("boom: the keychain is locked")
    sys.exit(1)
if mode == "garbage":
    print("no json here")
    sys.exit(0)
if action == "get":
    if server not in store:
        print("credentials not found in native keychain")
        sys.exit(1)
    user, secret = store[server]
    print(json.dumps({"ServerURL": server, "Username": user, "Secret": secret}))
elif action == "store":
    d = json.loads(data)
    store[server] = [d["Username"], d["Secret"]]
elif action == "erase":
    if server not in store:
        print("credentials not found in native keychain")
        sys.exit(1)
    del store[server]
else:
    print(f"unknown action {action}")
    sys.exit(1)
with open(store_path, "w") as f:
    json.dump(store, f)
"""


class Helper:
    """A docker-credential-hakotest on a PATH of the test's own."""

    def __init__(self, rt) -> None:
        self.rt = rt
        self.dir = rt.dir / "helper-bin"
        self.dir.mkdir()
        prog = self.dir / "docker-credential-hakotest"
        prog.write_text(HELPER)
        prog.chmod(0o755)
        rt.chown(self.dir)
        self.env = {"PATH": f"{self.dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def holds(self, store: dict) -> None:
        (self.dir / "store.json").write_text(json.dumps(store))
        self.rt.chown(self.dir)

    def held(self) -> dict:
        p = self.dir / "store.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def mode(self, m: str) -> None:
        (self.dir / "mode").write_text(m)
        self.rt.chown(self.dir)

    def calls(self) -> list[str]:
        p = self.dir / "calls"
        return p.read_text().splitlines() if p.exists() else []


def write_json(rt, path: Path, doc: dict) -> Path:
    """Owned by the runtime's user; nothing else is touched (a chown of the
    whole test dir would change the ctime the frozen binary's cache checks)."""
    for d in reversed([p for p in (path.parent, *path.parent.parents) if not p.exists()]):
        d.mkdir()
        rt.chown(d)
    path.write_text(json.dumps(doc))
    rt.chown(path)
    return path


def test_cred_helpers_login_pull_logout(rt, auth_kit):
    """credHelpers names the helper for a registry: pull asks it (the file's own
    base64 entry for that registry is not used), login stores in it, logout
    erases from it."""
    h = Helper(rt)
    host = auth_kit.basic.host
    ref = f"{host}/sec/img:1"
    env_of(rt)
    wrong = base64.b64encode(f"{USER}:{WRONG}".encode()).decode()
    write_json(rt, auth_json(rt), {"credHelpers": {host: "hakotest"},
                                   "auths": {host: {"auth": wrong}}})
    r = pull(rt, ref, check=False, env=h.env)  # the helper holds nothing yet
    assert r.returncode == 1 and "unauthorized for anonymous access" in r.stderr, r.stderr
    assert h.calls() == [f"get {host}"]
    r = rt.hako("--debug", "images", "login", "-u", USER, "--password-stdin", host,
                input=PASSWORD + "\n", env={**env_of(rt), **h.env}, timeout=60)
    assert r.returncode == 0 and "Login Succeeded" in r.stdout, r.stderr
    no_secrets(r)
    assert h.held() == {host: [USER, PASSWORD]}
    doc = json.loads(auth_json(rt).read_text())
    assert doc["auths"][host]["auth"] == wrong, "login wrote the secret to the file"
    r = pull(rt, ref, debug=True, env=h.env)
    assert "credentials of alice from docker-credential-hakotest" in r.stderr, r.stderr
    no_secrets(r)
    r = hako(rt, "images", "logout", host, env=h.env)
    assert r.returncode == 0, r.stderr
    assert h.held() == {} and h.calls()[-1] == f"erase {host}"
    r = hako(rt, "images", "logout", host, env=h.env)
    assert r.returncode == 1 and "not logged in" in r.stderr, r.stderr


def test_creds_store_of_docker_and_the_next_file(rt, auth_kit):
    """docker's credsStore holds every login; a helper with nothing for the
    registry passes on to the next file."""
    h = Helper(rt)
    host = auth_kit.basic.host
    ref = f"{host}/sec/img:1"
    env_of(rt)
    write_json(rt, rt.dir / "home" / ".docker" / "config.json",
               {"credsStore": "hakotest", "auths": {host: {}}})
    h.holds({host: [USER, PASSWORD]})
    r = pull(rt, ref, debug=True, env=h.env)
    assert "credentials of alice from docker-credential-hakotest" in r.stderr, r.stderr
    no_secrets(r)
    # a credHelpers entry whose helper has nothing: the docker file's store answers
    write_json(rt, auth_json(rt), {"credHelpers": {host: "hakotest"}})
    h.holds({"elsewhere.example": [USER, WRONG]})
    (rt.dir / "home" / ".docker" / "config.json").write_text(json.dumps(
        {"auths": {host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
    r = pull(rt, ref, debug=True, env=h.env)
    assert ".docker/config.json" in r.stderr and h.calls()[-1] == f"get {host}", r.stderr
    # login --authfile into a docker file with a credsStore: the store, and docker's
    # empty placeholder entry in the file
    af = write_json(rt, rt.dir / "docker-style.json", {"credsStore": "hakotest"})
    r = rt.hako("images", "login", "-u", USER, "--password-stdin", "--authfile", af, host,
                input=PASSWORD + "\n", env={**env_of(rt), **h.env}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(af.read_text())["auths"] == {host: {}}
    assert h.held()[host] == [USER, PASSWORD]
    r = hako(rt, "images", "logout", "--all", "--authfile", af, env=h.env)
    assert r.returncode == 0, r.stderr
    assert host not in h.held() and json.loads(af.read_text())["auths"] == {}


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_cred_helper_failures(rt, auth_kit):
    """Each broken helper is one line naming the helper and the file; nothing is
    pulled; a helper's own message is passed on, never what it returned."""
    h = Helper(rt)
    host = auth_kit.basic.host
    ref = f"{host}/sec/img:1"
    env_of(rt)

    def refused(doc: dict, *want: str) -> None:
        write_json(rt, auth_json(rt), doc)
        r = pull(rt, ref, check=False, env=h.env)
        lines = [x for x in r.stderr.splitlines() if x.startswith("hako")]
        assert r.returncode == 1 and len(lines) == 1, r.stderr
        for w in want:
            assert w in lines[0], lines[0]
        no_secrets(r)
        assert not images(rt)

    refused({"credHelpers": {host: "missing"}}, "docker-credential-missing is not in $PATH",
            str(auth_json(rt)))
    refused({"credHelpers": {host: "../hakotest"}}, "credHelpers", "not a credential helper")
    refused({"credsStore": 7}, "credsStore", "not a credential helper")
    h.holds({host: [USER, PASSWORD]})
    h.mode("fail")
    refused({"credHelpers": {host: "hakotest"}}, "docker-credential-hakotest get",
            "boom: the keychain is locked")
    h.mode("garbage")
    refused({"credHelpers": {host: "hakotest"}}, "not JSON with Username and Secret")
    h.mode("")
    r = rt.hako("images", "login", "-u", USER, "--password-stdin", host,
                input=PASSWORD + "\n", env={**env_of(rt), **h.env}, timeout=60)
    assert r.returncode == 0, r.stderr
    h.mode("fail")  # a store that fails is the login's failure
    r = rt.hako("images", "login", "-u", USER, "--password-stdin", host,
                input=PASSWORD + "\n", env={**env_of(rt), **h.env}, timeout=60)
    assert r.returncode == 1 and "docker-credential-hakotest store" in r.stderr, r.stderr
    no_secrets(r)


def test_identity_token_from_a_helper(rt, auth_kit):
    """A helper's `<token>` user is an OAuth2 identity token: swapped for a
    bearer token by POST, never in a URL, and refused for a Basic registry."""
    h = Helper(rt)
    ref = f"{auth_kit.bearer.host}/sec/img:1"
    env_of(rt)
    write_json(rt, auth_json(rt), {"credHelpers": {auth_kit.bearer.host: "hakotest",
                                                   auth_kit.basic.host: "hakotest"}})
    h.holds({auth_kit.bearer.host: ["<token>", IDENTITY],
             auth_kit.basic.host: ["<token>", IDENTITY]})
    before = len(auth_kit.tokens.requests)
    r = pull(rt, ref, debug=True, env=h.env)
    new = auth_kit.tokens.requests[before:]
    posts = [q for q in new if q["method"] == "POST"]
    assert posts and all(q["query"]["grant_type"] == ["refresh_token"] and
                         IDENTITY not in q["url_query"] for q in posts), new
    assert any("repository:sec/img:pull" in q["query"].get("scope", [""])[0] for q in posts)
    assert not [q for q in new if q["method"] == "GET"], "asked for a token by GET"
    no_secrets(r, IDENTITY, *auth_kit.tokens.issued)
    assert run_image(rt, ref, "--pull", "never") == "secured\n"
    # an identity token the token server does not know
    h.holds({auth_kit.bearer.host: ["<token>", "id-unknown"],
             auth_kit.basic.host: ["<token>", IDENTITY]})
    r = pull(rt, ref, check=False, env=h.env)  # (a repeat pull asks for the manifest)
    assert r.returncode == 1 and "refused the identity token" in r.stderr, r.stderr
    # a Basic registry cannot take one
    r = pull(rt, f"{auth_kit.basic.host}/sec/img:1", check=False, env=h.env)
    assert r.returncode == 1 and "identity token" in r.stderr, r.stderr
    no_secrets(r, IDENTITY)
