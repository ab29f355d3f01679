"""Registry TLS and authentication, root and rootless: HTTPS with a test CA
(--cert-dir, certs.d, --tls-verify=false), htpasswd basic auth and token auth
(a token server the tests run), `hako images login/logout`, credentials from
the files podman and docker write. No secret ever reaches stdout/stderr."""

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
        tokens = K.TokenServer(d / "tokens", {USER: PASSWORD})
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
