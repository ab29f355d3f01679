"""runtime/image/ without containers: references, digests, platforms, names,
the image user, and one-layer unpacks into a temporary directory (as
whoever runs the tests: no chown beyond one's own ids is needed)."""

from __future__ import annotations

import io
import os
import stat
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import imagebuild as ib  # noqa: E402
from runtime.errors import HakoError  # noqa: E402
from runtime.image import bundle, digest, source, unpack  # noqa: E402

ZERO = "sha256:" + "0" * 64


# ----------------------------------------------------------------- digests
@pytest.mark.parametrize("bad", ["", "sha256", "md5:" + "0" * 32, "sha256:" + "0" * 63,
                                 "sha256:" + "G" * 64, "sha256:../../etc/passwd",
                                 "sha256:" + "A" * 64])
def test_malformed_digests_refused(bad):
    with pytest.raises(digest.DigestError):
        digest.parse(bad)


def test_hashing_reader_checks_digest_and_size():
    data = b"hello"
    r = digest.HashingReader(io.BytesIO(data), digest.of_bytes(data), "blob", size=5)
    r.drain()
    assert r.check() == digest.of_bytes(data)
    r = digest.HashingReader(io.BytesIO(data), ZERO, "blob")
    r.drain()
    with pytest.raises(digest.DigestError, match="digest mismatch"):
        r.check()
    r = digest.HashingReader(io.BytesIO(data), digest.of_bytes(data), "blob", size=6)
    r.drain()
    with pytest.raises(digest.DigestError, match="size mismatch"):
        r.check()


# -------------------------------------------------------------- references
def test_parse_ref(tmp_path):
    d = tmp_path / "lay:out"
    d.mkdir()
    (tmp_path / "plain").mkdir()
    assert source.parse_ref(f"oci:{tmp_path}/plain:name:tag") == ("oci", f"{tmp_path}/plain",
                                                                  "name:tag")
    assert source.parse_ref(f"{d}") == (None, str(d), None)
    assert source.parse_ref(f"{tmp_path}/plain@{ZERO}") == (None, f"{tmp_path}/plain", ZERO)
    assert source.parse_ref(f"docker-archive:{tmp_path}/plain") == (
        "docker-archive", f"{tmp_path}/plain", None)
    with pytest.raises(source.ImageError):
        source.parse_ref(f"{tmp_path}/missing:tag")


@pytest.mark.parametrize("a,b", [("busybox", "docker.io/library/busybox:latest"),
                                 ("busybox:1", "docker.io/library/busybox:1"),
                                 ("quay.io/x/y", "quay.io/x/y:latest"),
                                 ("localhost/app:2", "app:2")])
def test_normalize_name(a, b):
    assert source.normalize_name(a) == source.normalize_name(b)


def test_pick_platform():
    descs = [{"digest": "a", "platform": {"os": "linux", "architecture": "amd64"}},
             {"digest": "b", "platform": {"os": "linux", "architecture": "arm64",
                                          "variant": "v8"}},
             {"digest": "c", "platform": {"os": "linux", "architecture": "arm",
                                          "variant": "v7"}}]
    assert source.pick_platform(descs, source.parse_platform("linux/amd64"), "x")["digest"] == "a"
    assert source.pick_platform(descs, source.parse_platform("linux/arm64"), "x")["digest"] == "b"
    assert source.pick_platform(descs, source.parse_platform("linux/arm/v7"), "x")["digest"] == "c"
    with pytest.raises(source.ImageError, match="available: linux/amd64"):
        source.pick_platform(descs, source.parse_platform("linux/arm/v6"), "x")
    with pytest.raises(source.ImageError):
        source.parse_platform("amd64")


def test_oci_layout_selection(tmp_path):
    img = ib.Image([ib.layer_tar([("file", "a", "a")])])
    layout = ib.write_oci(tmp_path / "l", [("one", img), ("two", ib.Image(
        [ib.layer_tar([("file", "b", "b")])]))])
    i = source.open_image(str(layout), "two")
    assert i.layers[0].diff_id == ib.sha(ib.layer_tar([("file", "b", "b")]))
    i.close()
    with pytest.raises(source.ImageError, match="choose one with --name"):
        source.open_image(str(layout))
    # a manifest that lies about its layers' count
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(source.ImageError, match="imageLayoutVersion"):
        source.open_image(str(layout), "one")


# ----------------------------------------------------------------- the user
def _layer_dir(tmp_path: Path, files: dict[str, str]) -> list[str]:
    d = tmp_path / "layer"
    for name, text in files.items():
        p = d / name.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return [str(d)]


def test_resolve_user(tmp_path):
    lowers = _layer_dir(tmp_path, {"etc/passwd": ib.PASSWD, "etc/group": ib.GROUP})
    assert bundle.resolve_user("", lowers) == {"uid": 0, "gid": 0}
    assert bundle.resolve_user("app", lowers) == {"uid": 1000, "gid": 1000,
                                                  "additionalGids": [33, 50]}
    assert bundle.resolve_user("1000", lowers)["gid"] == 1000
    assert bundle.resolve_user("4242", lowers) == {"uid": 4242, "gid": 0}
    assert bundle.resolve_user("app:staff", lowers) == {"uid": 1000, "gid": 50}
    assert bundle.resolve_user("12:34", lowers) == {"uid": 12, "gid": 34}
    with pytest.raises(HakoError, match="no user 'ghost'"):
        bundle.resolve_user("ghost", lowers)
    with pytest.raises(HakoError, match="no group 'ghosts'"):
        bundle.resolve_user("app:ghosts", lowers)


def test_etc_through_a_symlink_is_followed_inside_the_image(tmp_path):
    d = tmp_path / "layer"
    (d / "private" / "etc").mkdir(parents=True)
    (d / "private" / "etc" / "passwd").write_text("web:x:80:80::/:/bin/sh\n")
    os.symlink("/private/etc", d / "etc")
    assert bundle.resolve_user("web", [str(d)]) == {"uid": 80, "gid": 80}


# ------------------------------------------------------------------- unpack
def _unpack(tmp_path: Path, entries, lowers=(), name="u") -> Path:
    dest = tmp_path / name
    dest.mkdir()
    tar = ib.layer_tar(entries)
    unpack.unpack_tar(io.BytesIO(tar), str(dest), what="test", rootless=True,
                      lowers=list(lowers))
    return dest


def test_whiteouts_become_overlay_whiteouts(tmp_path):
    d = _unpack(tmp_path, [("whiteout", "gone"), ("dir", "o"), ("opaque", "o"),
                           ("file", "o/kept", "k"), ("whiteout", "re"), ("dir", "re"),
                           ("file", "same", "s"), ("whiteout", "same")])
    assert unpack.is_whiteout(os.lstat(d / "gone"))
    assert unpack.is_opaque(str(d / "o")) and (d / "o" / "kept").read_text() == "k"
    assert stat.S_ISDIR(os.lstat(d / "re").st_mode) and unpack.is_opaque(str(d / "re"))
    assert (d / "same").read_text() == "s"  # a whiteout does not hide its own layer
    assert sorted(os.listdir(d)) == ["gone", "o", "re", "same"]


def test_implicit_parents_take_the_lower_attributes(tmp_path):
    lower = _unpack(tmp_path, [("dir", "t", 0o1777)], name="lower")
    d = _unpack(tmp_path, [("file", "t/x", "x"), ("file", "new/y", "y")], lowers=[lower])
    assert stat.S_IMODE(os.lstat(d / "t").st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(d / "new").st_mode) == 0o755


def test_hardlink_to_a_lower_file_is_copied(tmp_path):
    lower = _unpack(tmp_path, [("file", "etc/motd", "hi", 0o640)], name="lower")
    d = _unpack(tmp_path, [("hardlink", "motd", "etc/motd"), ("file", "a", "a"),
                           ("hardlink", "b", "a")], lowers=[lower])
    assert (d / "motd").read_text() == "hi" and not (d / "etc").exists()
    assert stat.S_IMODE(os.lstat(d / "motd").st_mode) == 0o640
    assert os.lstat(d / "a").st_ino == os.lstat(d / "b").st_ino


@pytest.mark.parametrize("entries,why", [
    ([("file", "../x", "x")], "'..'"),
    ([("symlink", "l", "/tmp"), ("file", "l/x", "x")], "goes through the symlink"),
    ([("hardlink", "h", "nowhere")], "hard link"),
    ([("dir", "d"), ("hardlink", "h", "d")], "hard link to a directory"),
])
def test_unsafe_entries_refused(tmp_path, entries, why):
    with pytest.raises(unpack.UnpackError, match=why):
        _unpack(tmp_path, entries)


def test_absolute_names_refused(tmp_path):
    ti = tarfile.TarInfo("/etc/evil")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.addfile(ti, io.BytesIO(b""))
    (tmp_path / "u").mkdir()
    with pytest.raises(unpack.UnpackError, match="absolute"):
        unpack.unpack_tar(io.BytesIO(buf.getvalue()), str(tmp_path / "u"), what="t",
                          rootless=True, lowers=[])


def test_merged_lookup_honours_whiteouts_and_opaque_dirs(tmp_path):
    low = _unpack(tmp_path, [("file", "a/x", "x"), ("file", "b/y", "y"), ("file", "c", "c")],
                  name="low")
    top = _unpack(tmp_path, [("dir", "a"), ("opaque", "a"), ("whiteout", "c")], name="top")
    lowers = [str(top), str(low)]
    assert unpack.merged_lookup(lowers, ["a", "x"]) is None
    assert unpack.merged_lookup(lowers, ["b", "y"]) == str(low / "b" / "y")
    assert unpack.merged_lookup(lowers, ["c"]) is None


def test_gunzip_members_padding_and_corruption():
    """gzip through zlib directly: several members (zero padding between),
    a CRC error, a cut stream and trailing garbage are refused in one line."""
    import gzip
    from runtime.image import decompress
    data = os.urandom(100_000) + b"a" * 3_000_000
    blob = gzip.compress(data[:1000]) + b"\0" * 10 + gzip.compress(data[1000:]) + b"\0" * 3

    def read_all(b: bytes, n: int = 7777) -> bytes:
        s, close = decompress._decompressor(io.BytesIO(b), "layer")
        out = []
        while True:
            x = s.read(n)
            if not x:
                break
            assert len(x) <= n
            out.append(x)
        close()
        return b"".join(out)

    assert read_all(blob) == data and read_all(blob, 1 << 20) == data
    for bad, why in ((blob[:-40], "cut short"), (blob[:60] + b"X" + blob[61:], "corrupt gzip"),
                     (gzip.compress(b"x") + b"garbage", "corrupt gzip")):
        with pytest.raises(decompress.DecompressError, match=why):
            read_all(bad)
