"""`hako images pull` and `hako bundle` with registry references, against a real
registry: Debian's docker-registry (distribution 2.8) on 127.0.0.1, images pushed
with skopeo from OCI layouts built by tests/imagebuild.py. Root and rootless.

Faults go through tests/registry_kit.FaultProxy (429/503, a tampered blob, a
connection cut mid-layer). TLS, basic and token auth are in test_registry_auth.py.
Every hako call gets a private HOME, XDG_RUNTIME_DIR, registries.conf and store.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

import imagebuild as ib
import registry_kit as K
from test_image_drivers import patch_config


# ------------------------------------------------------------------ fixtures
def _marker(base: bytes, text: str, arch: str = "amd64") -> ib.Image:
    return ib.Image([base, ib.layer_tar([("file", "which", text)])], arch=arch,
                    config={"Cmd": ["cat", "/which"]})


@pytest.fixture(scope="session")
def kit(hako_session):
    """One plain-HTTP registry with the test images, and a fault proxy in front."""
    missing = K.missing_tools()
    if missing:
        pytest.skip(f"registry tests need {', '.join(missing)} (make host-deps)")
    # outside the session directory: the leftover checks would take the registry
    # (its command line names its files) for a process a test left behind
    d = Path(tempfile.mkdtemp(prefix="hako-registry-", dir="/tmp"))
    os.chmod(d, 0o755)
    base = ib.layer_tar(None, base_dir=hako_session.rootfs())
    big = ib.layer_tar([("file", "big", os.urandom(3 << 20))])
    layouts = {
        "one": ib.write_oci(d / "one", [("one", _marker(base, "one\n"))]),
        "zstd": ib.write_oci(d / "zstd", [("zstd", _marker(base, "zstd\n"))],
                             compression="zstd"),
        "plain": ib.write_oci(d / "plain", [("plain", _marker(base, "plain\n"))],
                              compression=""),
        "multi": ib.write_oci(d / "multi", [("multi", _marker(base, "amd64\n")),
                                           (None, _marker(base, "arm64\n", "arm64"))],
                              multiarch=True),
        "docker": ib.write_oci(d / "docker", [("docker", _marker(base, "docker\n"))]),
        "big": ib.write_oci(d / "big", [("big", ib.Image(
            [base, big], config={"Cmd": ["sh", "-c", "wc -c < /big"]}))]),
    }
    reg = K.Registry(d / "plain-registry")
    proxy = None
    try:
        K.push(layouts["one"], "one", f"{reg.host}/test/one:1")
        K.push(layouts["one"], "one", f"{reg.host}/library/busybox:latest")
        K.push(layouts["one"], "one", f"{reg.host}/busybox:latest")
        K.push(layouts["zstd"], "zstd", f"{reg.host}/test/zstd:1")
        K.push(layouts["plain"], "plain", f"{reg.host}/test/plain:1")
        K.push(layouts["multi"], "multi", f"{reg.host}/test/multi:1", all_platforms=True)
        K.push(layouts["docker"], "docker", f"{reg.host}/test/docker:1", docker_format=True)
        K.push(layouts["big"], "big", f"{reg.host}/test/big:1")
        proxy = K.FaultProxy(reg.host)
        for p in d.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        yield SimpleNamespace(reg=reg, proxy=proxy, dir=d, layouts=layouts)
    finally:
        if proxy is not None:
            proxy.close()
        reg.close()
        shutil.rmtree(d, ignore_errors=True)


def store_of(rt) -> Path:
    return rt.dir / "store"


def env_of(rt, conf: str = "") -> dict:
    """A private HOME, XDG_RUNTIME_DIR and registries.conf for the call."""
    home = rt.dir / "home"
    if not home.exists():
        home.mkdir(mode=0o700)
        rt.chown(home)
    p = rt.dir / "registries.conf"
    p.write_text(conf)
    os.chmod(p, 0o644)
    return {"HOME": home, "XDG_RUNTIME_DIR": rt.xdg, "CONTAINERS_REGISTRIES_CONF": p}


def hako(rt, *args, conf: str = "", timeout: float = 120, env: dict | None = None):
    return rt.hako(*args, env={**env_of(rt, conf), **(env or {})}, timeout=timeout)


def pull(rt, ref: str, *extra, conf: str = "", check: bool = True, env=None, debug=False,
         store: Path | None = None):
    pre = ["--debug"] if debug else []
    r = hako(rt, *pre, "images", "pull", "--store", store or store_of(rt), *extra, ref,
             conf=conf, env=env)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def run_image(rt, ref: str, *extra, conf: str = "", name: str = "b") -> str:
    b = rt.dir / name
    r = hako(rt, "bundle", "--image", ref, "--store", store_of(rt), *extra, b, conf=conf)
    assert r.returncode == 0, r.stderr
    patch_config(rt, b)
    r = rt.hako("run", "--bundle", b, rt.new_id(), timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def images(rt) -> list[dict]:
    r = hako(rt, "images", "--store", store_of(rt), "--format", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def blobs_of(rt, store: Path | None = None) -> list[str]:
    d = (store or store_of(rt)) / "blobs" / "sha256"
    return sorted(f"sha256:{p.name}" for p in d.iterdir()) if d.exists() else []


def assert_nothing_kept(rt, absent: tuple[str, ...] = (), blobs: tuple[str, ...] = ()) -> None:
    """No image record, no partial layer, no download left in the store; no
    layer of the *absent* diff_ids, no blob of the *blobs* digests (other
    verified blobs may be kept for the next attempt)."""
    st = store_of(rt)
    if not st.exists():
        return
    assert not list((st / "images").glob("*.json")), "an image record was written"
    for p in (st / "layers").iterdir():
        assert not p.name.startswith(".") and (p / "layer.json").exists(), f"partial {p}"
        assert f"sha256:{p.name}" not in absent, f"layer {p.name} was kept"
    if (st / "downloads").exists():
        assert not list((st / "downloads").iterdir()), "a download was kept"
    for b in blobs:
        assert b not in blobs_of(rt), f"blob {b} was kept"


# ---------------------------------------------------------------------- tests
def test_pull_then_bundle_and_run(rt, kit):
    ref = f"{kit.reg.host}/test/one:1"
    r = pull(rt, ref)
    image_id = r.stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71, r.stdout
    recs = images(rt)
    assert [x["names"][0] for x in recs] == [ref] and recs[0]["id"] == image_id
    assert recs[0]["layers_present"] == 2 and recs[0]["source"] == f"docker://{ref}"
    assert not list((store_of(rt) / "downloads").iterdir()), "downloaded blobs were kept"
    # pull fetched the blobs only; the bundle unpacks them, then drops them
    assert recs[0]["layers_unpacked"] == 0 and len(blobs_of(rt)) == 2
    assert not [p for p in (store_of(rt) / "layers").iterdir()]
    # the bundle takes it from the store: no registry needed
    assert run_image(rt, ref, "--pull", "never") == "one\n"
    assert images(rt)[0]["layers_unpacked"] == 2 and blobs_of(rt) == []


def test_layers_in_the_store_are_not_downloaded_again(rt, kit):
    kit.proxy.clear()
    ref = f"{kit.proxy.host}/test/one:1"
    pull(rt, ref)
    first = kit.proxy.requests("/blobs/")
    assert len(first) == 3, first  # config + 2 layers
    kit.proxy.clear()
    # the same base layer compressed with zstd: the store knows its diff_id
    r = pull(rt, f"{kit.proxy.host}/test/zstd:1")
    assert "1 layer pulled, 1 already in the store" in r.stderr, r.stderr
    zbase = _layer_digests(kit, "zstd")[0]
    assert zbase not in _layer_digests(kit, "one") and not kit.proxy.requests(zbase)
    kit.proxy.clear()
    r = pull(rt, ref)
    again = kit.proxy.requests("/blobs/")
    assert [x[1].rsplit("/", 1)[1] for x in again] == [_manifest(kit, "one")["config"]["digest"]]
    assert "0 layers pulled, 2 already in the store" in r.stderr, r.stderr


def test_formats_zstd_uncompressed_docker_schema2(rt, kit):
    for repo, text in (("test/zstd:1", "zstd\n"), ("test/plain:1", "plain\n"),
                       ("test/docker:1", "docker\n")):
        ref = f"{kit.reg.host}/{repo}"
        pull(rt, ref)
        assert run_image(rt, ref, name=f"b-{repo.split('/')[1][:-2]}") == text
    raw, _ = kit.reg.manifest("test/docker", "1")
    assert json.loads(raw)["mediaType"] == \
        "application/vnd.docker.distribution.manifest.v2+json"


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_platform_selection(rt, kit):
    ref = f"{kit.reg.host}/test/multi:1"
    r = pull(rt, ref, "--platform", "linux/arm64")
    assert [x["platform"] for x in images(rt)] == ["linux/arm64"]
    r = pull(rt, ref, "--platform", "linux/s390x", check=False)
    assert r.returncode != 0
    assert "linux/amd64" in r.stderr and "linux/arm64" in r.stderr and "--platform" in r.stderr
    if platform.machine() == "x86_64":
        pull(rt, ref)
        assert run_image(rt, ref) == "amd64\n"


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_references_by_digest(rt, kit):
    raw, digest = kit.reg.manifest("test/one", "1")
    ref = f"{kit.reg.host}/test/one@{digest}"
    r = pull(rt, ref)
    assert ref in images(rt)[0]["names"]
    assert run_image(rt, ref, "--pull", "never") == "one\n"
    wrong = f"{kit.reg.host}/test/one@sha256:{'0' * 64}"
    r = pull(rt, wrong, check=False)
    assert r.returncode != 0 and "not found" in r.stderr, r.stderr
    r = pull(rt, f"{kit.reg.host}/test/one@sha256:abc", check=False)
    assert r.returncode != 0 and "malformed" in r.stderr, r.stderr


def test_unknown_repository_and_tag(rt, kit):
    r = pull(rt, f"{kit.reg.host}/test/nope:1", check=False)
    assert r.returncode == 1 and "test/nope:1: not found" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = pull(rt, f"{kit.reg.host}/test/one:2", check=False)
    assert r.returncode == 1 and "test/one:2: not found" in r.stderr, r.stderr
    r = pull(rt, "UPPER/case", check=False)
    assert r.returncode != 0 and "lowercase" in r.stderr, r.stderr
    r = pull(rt, f"127.0.0.1:{K.free_port()}/x:1", check=False)
    assert r.returncode != 0 and "cannot reach" in r.stderr, r.stderr
    assert_nothing_kept(rt)


def test_short_names_search_registries_mirrors_aliases(rt, kit):
    empty = K.Registry(Path(tempfile.mkdtemp(prefix="empty-", dir=kit.dir)))
    try:
        conf = f'unqualified-search-registries = ["{empty.host}", "{kit.reg.host}"]\n'
        r = pull(rt, "busybox", conf=conf)
        assert [x["names"][0] for x in images(rt)] == [f"{kit.reg.host}/busybox:latest"]
        # the bundle finds the short name in the store (no pull)
        assert run_image(rt, "busybox", "--pull", "never", conf=conf) == "one\n"
        r = pull(rt, "nothere", conf=conf, check=False)
        assert r.returncode != 0 and "not found in the search registries" in r.stderr
        assert empty.host in r.stderr and kit.reg.host in r.stderr
    finally:
        empty.close()
    # docker.io through a mirror: busybox -> docker.io/library/busybox
    conf = ('[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n'
            f'[[registry.mirror]]\nlocation = "{kit.reg.host}"\n')
    r = pull(rt, "busybox", conf=conf)
    assert f"from {kit.reg.host}/library/busybox" in r.stderr, r.stderr
    assert "docker.io/library/busybox:latest" in [n for x in images(rt) for n in x["names"]]
    # the README's two commands (pull, then bundle + run by the short name)
    assert run_image(rt, "busybox", "--pull", "never", conf=conf, name="b2") == "one\n"
    # an alias
    conf = f'[aliases]\n"myone" = "{kit.reg.host}/test/one"\n'
    pull(rt, "myone:1", conf=conf)
    assert f"{kit.reg.host}/test/one:1" in [n for x in images(rt) for n in x["names"]]
    # a blocked registry
    conf = f'[[registry]]\nprefix = "{kit.reg.host}"\nblocked = true\n'
    r = pull(rt, f"{kit.reg.host}/test/one:1", conf=conf, check=False)
    assert r.returncode != 0 and "blocked" in r.stderr


def test_bundle_pulls_a_registry_reference(rt, kit):
    ref = f"docker://{kit.reg.host}/test/zstd:1"
    r = hako(rt, "bundle", "--image", ref, "--store", store_of(rt), "--pull", "never",
             rt.dir / "b0")
    assert r.returncode != 0 and "--pull never" in r.stderr
    assert run_image(rt, ref) == "zstd\n"
    assert [x["names"][0] for x in images(rt)] == [ref[len("docker://"):]]
    r = hako(rt, "bundle", "--image", f"{kit.reg.host}/test/nope:1", "--store", store_of(rt),
             rt.dir / "b2")
    assert r.returncode != 0 and "not found" in r.stderr
    assert not (rt.dir / "b2").exists()


# --------------------------------------------------------------------- faults
def _manifest(kit, name: str) -> dict:
    layout = kit.layouts[name]
    idx = json.loads((layout / "index.json").read_text())
    return json.loads((layout / "blobs" / "sha256" / idx["manifests"][0]["digest"][7:])
                      .read_text())


def _diff_ids(kit, name: str) -> list[str]:
    cfg = _manifest(kit, name)["config"]["digest"]
    return json.loads((kit.layouts[name] / "blobs" / "sha256" / cfg[7:]).read_text()
                      )["rootfs"]["diff_ids"]


def _layer_digests(kit, name: str) -> list[str]:
    return [x["digest"] for x in _manifest(kit, name)["layers"]]


def test_a_tampered_blob_is_refused_and_nothing_kept(rt, kit):
    kit.proxy.clear()
    top = _layer_digests(kit, "one")[-1]
    kit.proxy.add(f"/blobs/{top}$", "tamper", times=1)
    r = pull(rt, f"{kit.proxy.host}/test/one:1", check=False)
    assert r.returncode == 1 and "digest mismatch" in r.stderr, r.stderr
    assert_nothing_kept(rt, absent=(_diff_ids(kit, "one")[-1],), blobs=(top,))
    kit.proxy.clear()


def test_a_connection_cut_mid_layer_is_resumed_with_range(rt, kit):
    kit.proxy.clear()
    big = _layer_digests(kit, "big")[-1]
    kit.proxy.add(f"/blobs/{big}$", "cut", times=1, after=1 << 20)
    ref = f"{kit.proxy.host}/test/big:1"
    r = pull(rt, ref)
    got = kit.proxy.requests(f"/blobs/{big}$")
    assert len(got) == 2, got
    assert got[0][2] is None and got[1][2] == f"bytes={1 << 20}-" and got[1][3] == 206, got
    assert run_image(rt, ref, "--pull", "never") == f"{3 << 20}\n"
    kit.proxy.clear()


def test_429_and_503_are_retried(rt, kit):
    kit.proxy.clear()
    kit.proxy.add("/manifests/1$", "status", times=1, code=429, headers={"Retry-After": "1"})
    layer = _layer_digests(kit, "one")[0]
    kit.proxy.add(f"/blobs/{layer}$", "status", times=2, code=503)
    r = pull(rt, f"{kit.proxy.host}/test/one:1", debug=True)
    man = kit.proxy.requests("/manifests/1$")
    assert [x[3] for x in man][:2] == [429, 200], man
    assert [x[3] for x in kit.proxy.requests(f"/blobs/{layer}$")] == [503, 503, 200]
    assert "HTTP 429: retrying in 1.0s" in r.stderr, r.stderr
    # a registry that keeps failing: a clear error after the retries
    kit.proxy.clear()
    kit.proxy.add("/manifests/1$", "status", times=100, code=503)
    r = pull(rt, f"{kit.proxy.host}/test/zstd:1", check=False)
    assert r.returncode == 1 and "HTTP 503" in r.stderr, r.stderr
    kit.proxy.clear()


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_a_download_left_by_a_killed_pull_is_continued(rt, kit):
    big = _layer_digests(kit, "big")[-1]
    blob = (kit.layouts["big"] / "blobs" / "sha256" / big[7:]).read_bytes()
    for name, head, ranges in (("store", blob[:1 << 20], [f"bytes={1 << 20}-"]),
                               ("store2", os.urandom(1 << 20), [f"bytes={1 << 20}-", None])):
        store = rt.dir / name
        pull(rt, f"{kit.reg.host}/test/one:1", store=store)  # makes the store
        left = store / "downloads" / big[7:]
        left.write_bytes(head)  # what a killed pull leaves: the start, or garbage
        if rt.user.setpriv:
            os.chown(left, rt.uid, rt.gid)
        kit.proxy.clear()
        pull(rt, f"{kit.proxy.host}/test/big:1", store=store)
        assert [x[2] for x in kit.proxy.requests(f"{big}$")] == ranges
        assert not list((store / "downloads").iterdir())
    kit.proxy.clear()


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_concurrent_pulls_of_one_image(rt, kit):
    argv = rt.hako_argv("images", "pull", "--quiet", "--store", store_of(rt),
                        f"{kit.reg.host}/test/big:1")
    procs = [rt.popen(argv, env=env_of(rt), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True) for _ in range(3)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert len({o.strip() for o, _ in outs}) == 1
    assert blobs_of(rt) == sorted(_layer_digests(kit, "big"))
    assert not [p for p in (store_of(rt) / "downloads").iterdir() if p.suffix != ".lock"]
    assert [x["layers_present"] for x in images(rt)] == [2]


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_progress_bars_on_a_terminal_and_quiet(rt, kit):
    r = pull(rt, f"{kit.reg.host}/test/big:1", env={"HAKO_PROGRESS": "1"})
    assert "\x1b[" in r.stderr and "Copying blob" in r.stderr and "MiB" in r.stderr
    r = pull(rt, f"{kit.reg.host}/test/one:1", "--quiet")
    assert r.stderr == "" and r.stdout.startswith("sha256:")


def test_help_and_usage_errors(rt, kit):
    r = hako(rt, "images", "--help")
    assert "pull" in r.stdout and "login" in r.stdout
    r = hako(rt, "images", "pull")
    assert r.returncode == 2 and "expected one image reference" in r.stderr
    r = hako(rt, "images", "frobnicate")
    assert r.returncode == 2 and "pull" in r.stderr


# ------------------------------------------------------ content and layers
def test_bundle_of_a_pulled_image_with_the_registry_stopped(rt, kit):
    """pull stores verified blobs; the bundle unpacks them with no network."""
    reg = K.Registry(Path(tempfile.mkdtemp(prefix="gone-", dir=kit.dir)))
    try:
        ref = f"{reg.host}/test/gone:1"
        K.push(kit.layouts["big"], "big", ref)
        pull(rt, ref)
    finally:
        reg.close()
    assert len(blobs_of(rt)) == 2
    assert run_image(rt, ref) == f"{3 << 20}\n"  # --pull missing: nothing is missing
    assert blobs_of(rt) == [] and images(rt)[0]["layers_unpacked"] == 2


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_prune_and_rm_remove_the_blobs_no_image_needs(rt, kit):
    pull(rt, f"{kit.reg.host}/test/big:1")
    pull(rt, f"{kit.reg.host}/test/one:1")  # shares the base layer (the same blob)
    big = _layer_digests(kit, "big")
    one = _layer_digests(kit, "one")
    assert big[0] == one[0] and blobs_of(rt) == sorted(set(big + one))
    r = hako(rt, "layers", "prune", "--store", store_of(rt))
    assert r.returncode == 0 and "0 blobs" in r.stderr, r.stderr
    assert blobs_of(rt) == sorted(set(big + one)), "prune removed blobs an image needs"
    # a partial download nobody continues is removed by prune
    left = store_of(rt) / "downloads" / ("0" * 64)
    left.write_bytes(b"partial")
    r = hako(rt, "images", "rm", "--store", store_of(rt), f"{kit.reg.host}/test/big:1")
    assert r.returncode == 0, r.stderr
    assert blobs_of(rt) == sorted(one), "images rm kept a blob only it needed"
    r = hako(rt, "layers", "prune", "--all", "--store", store_of(rt))
    assert r.returncode == 0 and "2 blobs" in r.stderr, r.stderr
    assert blobs_of(rt) == [] and images(rt) == [] and not left.exists()


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_a_truncated_or_damaged_blob_never_counts_as_present(rt, kit):
    ref = f"{kit.proxy.host}/test/big:1"
    big = _layer_digests(kit, "big")[-1]
    pull(rt, ref)
    p = store_of(rt) / "blobs" / "sha256" / big[7:]
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # truncated: not present, fetched again
    kit.proxy.clear()
    r = pull(rt, ref)
    assert [x[1].rsplit("/", 1)[1] for x in kit.proxy.requests(f"{big}$")] == [big]
    assert "1 layer pulled" in r.stderr and p.read_bytes() == data
    # the right size but other bytes: the unpack refuses it and removes it
    p.write_bytes(bytes(len(data)))
    b = rt.dir / "bad"
    r = hako(rt, "bundle", "--image", ref, "--store", store_of(rt), "--pull", "never", b)
    assert r.returncode == 1 and "digest mismatch" in r.stderr and "pull" in r.stderr, r.stderr
    assert not p.exists() and not (b / "config.json").exists()
    assert sorted(x.name for x in (store_of(rt) / "layers").iterdir()) == \
        [_diff_ids(kit, "big")[0][7:]], "a layer of the bad blob was kept"
    # missing now: the default --pull missing fetches it again
    kit.proxy.clear()
    assert run_image(rt, ref) == f"{3 << 20}\n"
    assert len(kit.proxy.requests(f"{big}$")) == 1
    kit.proxy.clear()


@pytest.mark.parametrize("mode", ["rootless"], indirect=True)
def test_concurrent_bundles_of_a_pulled_image(rt, kit):
    """Several bundles unpack the same blobs at once: each layer once, one
    syncfs per bundle, nobody waits on another forever."""
    ref = f"{kit.reg.host}/test/big:1"
    pull(rt, ref)
    argvs = [rt.hako_argv("bundle", "--image", ref, "--pull", "never", "--store",
                          store_of(rt), rt.dir / f"c{i}") for i in range(3)]
    procs = [rt.popen(a, env=env_of(rt), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True) for a in argvs]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    layers = list((store_of(rt) / "layers").iterdir())
    assert sorted(p.name for p in layers) == sorted(d[7:] for d in _diff_ids(kit, "big"))
    assert all((p / "layer.json").exists() for p in layers) and blobs_of(rt) == []
    assert sum(int(o.split("layers, ")[1].split(" ")[0]) for o, _ in outs) == 2, outs


def test_an_image_with_a_repeated_layer(rt, kit):
    """The same diff_id twice (e.g. empty layers): unpacked once, in one batch."""
    base = (kit.layouts["one"] / "blobs" / "sha256")
    man = _manifest(kit, "one")
    raw = [gzip.decompress((base / d["digest"][7:]).read_bytes()) for d in man["layers"]]
    img = ib.Image([raw[0], raw[1], raw[0], raw[1]], config={"Cmd": ["cat", "/which"]})
    layout = ib.write_oci(rt.dir / "rep", [("rep", img)])
    rt.chown(layout)
    assert run_image(rt, f"oci:{layout}:rep") == "one\n"
    layers = list((store_of(rt) / "layers").iterdir())
    assert len(layers) == 2 and all((p / "layer.json").exists() for p in layers)


# ------------------------------------------------------- non-distributable layers
@pytest.fixture(scope="session")
def foreign(kit):
    """test/foreign:1 and :dead, whose marker layer is non-distributable: the
    registry does not hold it, its descriptor's urls point at a BlobServer."""
    base_manifest, _ = kit.reg.manifest("test/one", "1")
    K.push(kit.layouts["one"], "one", f"{kit.reg.host}/test/foreign:seed")
    doc = json.loads(base_manifest)
    layer = doc["layers"][1]
    hexd = layer["digest"].split(":", 1)[1]
    data = (kit.layouts["one"] / "blobs" / "sha256" / hexd).read_bytes()
    tampered = data[:-1] + bytes([data[-1] ^ 0xFF])  # (a gzip often ends in a 0 byte)
    server = K.BlobServer({f"/good/{hexd}": data, "/tampered": tampered})
    try:
        def tag(name: str, urls: list[str]) -> None:
            d = json.loads(base_manifest)
            d["layers"][1]["mediaType"] = \
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            d["layers"][1]["urls"] = urls
            kit.reg.put_manifest("test/foreign", name, json.dumps(d).encode(),
                                 d.get("mediaType", "application/vnd.oci.image.manifest.v1+json"))
        tag("1", [f"{server.url}/tampered", f"{server.url}/missing", f"{server.url}/good/{hexd}"])
        tag("dead", [f"{server.url}/tampered"])
        kit.reg.delete_blob("test/foreign", layer["digest"])
        yield SimpleNamespace(server=server, digest=layer["digest"], hex=hexd)
    finally:
        server.close()


def test_a_non_distributable_layer_comes_from_its_urls(rt, kit, foreign):
    """Its urls are tried in order (a tampered one and a missing one are passed
    over), with no registry credentials; the digest decides."""
    foreign.server.requests.clear()
    ref = f"{kit.reg.host}/test/foreign:1"
    r = pull(rt, ref, debug=True)
    paths = [p for p, _ in foreign.server.requests]
    assert paths == ["/tampered", "/missing", f"/good/{foreign.hex}"], (paths, r.stderr)
    assert not [h for _, h in foreign.server.requests if "Authorization" in h]
    assert "digest mismatch" in r.stderr and "trying the next source" in r.stderr, r.stderr
    assert run_image(rt, ref, "--pull", "never") == "one\n"


def test_a_non_distributable_layer_no_source_has(rt, kit, foreign):
    ref = f"{kit.reg.host}/test/foreign:dead"
    r = pull(rt, ref, check=False)
    lines = [x for x in r.stderr.splitlines() if x.startswith("hako")]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "not found" in lines[0] and "its urls failed too" in lines[0] \
        and "/tampered: digest mismatch" in lines[0], lines[0]
    assert_nothing_kept(rt, blobs=(foreign.digest,))
