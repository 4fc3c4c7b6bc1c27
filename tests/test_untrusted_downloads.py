"""Downloads from servers that cut, change, or stall (issue 11, items 1-3, 5): a local threaded HTTP server
with ETag / Range / If-Range support (tests/range_server.py) and tiny checkpoints."""
import io
import os
import tarfile

import pytest
import torch

from range_server import RangeServer
from sat_accel import hub
from sat_accel.checkpoint_format import read_weights, resolve_load_dir, save_model_folder
from sat_accel.errors import CheckpointError


@pytest.fixture
def server():
    srv = RangeServer()
    yield srv
    srv.close()


def _tar(tmp_path, value: float, tag: str) -> bytes:
    """An uncompressed tar of a model folder `tiny` with two weight shards, every weight equal to `value`."""
    state = {"a": torch.full((1000,), value), "b": torch.full((1000,), value)}
    folder = save_model_folder(str(tmp_path / tag / "tiny"), state, {"model_class": "Tiny"}, max_shard_size="5000B")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        tf.add(folder, arcname="tiny")
    return buffer.getvalue()


def _last_member_offset(data: bytes) -> int:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return max(m.offset for m in tf.getmembers())


def _values(folder: str) -> set[float]:
    state, _ = read_weights(resolve_load_dir(folder).path)
    return {float(v) for t in state.values() for v in t.unique()}


def test_a_download_cut_at_a_member_boundary_is_not_cached_and_resumes(tmp_path, server):
    data = _tar(tmp_path, 1.0, "v1")
    server.files["/m.tar"] = data
    server.cut_after["/m.tar"] = _last_member_offset(data)  # a tar that still opens, without its last file
    home = tmp_path / "home"
    with pytest.raises(CheckpointError, match=rf"incomplete: {_last_member_offset(data)} of {len(data)} bytes"):
        hub.resolve_model_folder("tiny", home_path=str(home), url=server.url("/m.tar"))
    assert not (home / "tiny").exists()
    del server.cut_after["/m.tar"]
    folder = hub.resolve_model_folder("tiny", home_path=str(home), url=server.url("/m.tar"))
    assert _values(folder) == {1.0}
    resumed = server.requests[-1]
    assert resumed["Range"] == f"bytes={_last_member_offset(data)}-" and resumed["If-Range"]


def test_a_partial_of_an_older_version_is_not_continued_with_a_newer_one(tmp_path, server):
    old, new = _tar(tmp_path, 1.0, "v1"), _tar(tmp_path, 2.0, "v2")
    assert len(old) == len(new)
    server.files["/latest.tar"] = old
    server.cut_after["/latest.tar"] = len(old) // 2
    home = tmp_path / "home"
    with pytest.raises(CheckpointError, match="incomplete"):
        hub.resolve_model_folder("tiny", home_path=str(home), url=server.url("/latest.tar"))
    server.files["/latest.tar"] = new  # the "latest" url now serves another version
    del server.cut_after["/latest.tar"]
    folder = hub.resolve_model_folder("tiny", home_path=str(home), url=server.url("/latest.tar"))
    assert _values(folder) == {2.0}  # not a mix of the two versions


def test_a_partial_of_another_url_for_the_same_name_is_not_continued(tmp_path, server):
    server.files["/a.tar"], server.files["/b.tar"] = _tar(tmp_path, 1.0, "v1"), _tar(tmp_path, 3.0, "v3")
    server.cut_after["/a.tar"] = len(server.files["/a.tar"]) // 2
    home = tmp_path / "home"
    with pytest.raises(CheckpointError, match="incomplete"):
        hub.resolve_model_folder("tiny", home_path=str(home), url=server.url("/a.tar"))
    folder = hub.resolve_model_folder("tiny", home_path=str(home), url=server.url("/b.tar"))
    assert _values(folder) == {3.0}
    assert "Range" not in server.requests[-1]


def test_a_resume_without_validator_is_checked_by_sha256(tmp_path, server):
    import hashlib

    from sat_accel.download import download_file

    data = _tar(tmp_path, 1.0, "v1")
    dest = str(tmp_path / "file.tar")
    with open(dest + ".part", "wb") as f:  # a partial whose origin is unknown (no validator recorded)
        f.write(b"x" * 1000)
    server.files["/m.tar"] = data
    download_file(server.url("/m.tar"), dest, sha256=hashlib.sha256(data).hexdigest())
    assert open(dest, "rb").read() == data  # resumed, failed the sha256, downloaded again from the start
    assert not os.path.exists(dest + ".part") and not os.path.exists(dest + ".part.json")


def test_a_stalled_server_names_the_url_and_keeps_the_partial(tmp_path, server):
    from sat_accel.download import download_file

    server.files["/slow.tar"] = b"y" * 5000
    server.stall_after["/slow.tar"] = 100
    dest = str(tmp_path / "slow.tar")
    with pytest.raises(CheckpointError, match=r"slow.tar stalled: no data for 0.5 s after 100 of 5000 bytes.*"
                                              r"run again to resume"):
        download_file(server.url("/slow.tar"), dest, timeout_s=0.5)
    assert os.path.getsize(dest + ".part") == 100


def test_an_archive_bomb_is_refused_before_writing(tmp_path, server, monkeypatch):
    folder = save_model_folder(str(tmp_path / "src" / "tiny"), {"w": torch.ones(4)}, {"model_class": "Tiny"})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        tf.add(folder, arcname="tiny")
        info = tarfile.TarInfo("tiny/padding.bin")
        info.size = 20 * 2**20
        tf.addfile(info, io.BytesIO(bytes(info.size)))  # 20 MiB of zeros: ~20 KB compressed
    server.files["/bomb.tar.gz"] = buffer.getvalue()
    home = tmp_path / "home"
    with pytest.raises(CheckpointError, match=r"expand to 2097\d+ bytes, more than 20 times.*SAT_MAX_EXTRACT_RATIO"):
        hub.resolve_model_folder("tiny", home_path=str(home), url=server.url("/bomb.tar.gz"))
    assert not any(p.name.startswith("tiny.tmp-extract") or p.name == "tiny" for p in home.iterdir())
    monkeypatch.setenv("SAT_MAX_EXTRACT_RATIO", "10000")  # the documented override
    assert _values(hub.resolve_model_folder("tiny", home_path=str(home), url=server.url("/bomb.tar.gz"))) == {1.0}


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/absolute-model-name-i14", "a/../../b"])
def test_a_model_name_cannot_leave_the_models_folder(tmp_path, server, name):
    server.files["/m.tar"] = _tar(tmp_path, 1.0, "v1")
    home = tmp_path / "deep" / "home"
    with pytest.raises(CheckpointError, match="would resolve outside the models folder"):
        hub.resolve_model_folder(name, home_path=str(home), url=server.url("/m.tar"))
    assert not (tmp_path / "escaped").exists() and not os.path.exists("/tmp/absolute-model-name-i14")
