"""Name -> folder resolution: local folders, home_path / $SAT_HOME, file:// and http:// archives (zip,
tar.gz), resumable and verified downloads, malicious archives, concurrent downloads, offline hub ids."""
import functools
import hashlib
import http.server
import io
import os
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import zipfile

import pytest
import torch

from sat_accel import hub
from sat_accel.errors import CheckpointError
from sat_accel.checkpoint_format import read_weights, resolve_load_dir
from sat_accel.training.checkpoint import save_model_folder


@pytest.fixture
def model_folder(tmp_path):
    """A complete from_pretrained folder named `tiny` (model_config.json, latest, release/ weights)."""
    state = {"w": torch.arange(12.0).reshape(3, 4), "b": torch.ones(3)}
    return save_model_folder(str(tmp_path / "src" / "tiny"), state, {"model_class": "Tiny", "hidden_size": 4})


def _zip(folder, dest):
    with zipfile.ZipFile(dest, "w") as zf:
        for root, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(root, name)
                zf.write(path, os.path.relpath(path, os.path.dirname(folder)))
    return str(dest)


def _targz(folder, dest):
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(folder, arcname=os.path.basename(folder))
    return str(dest)


def _assert_tiny(folder):
    state, _ = read_weights(resolve_load_dir(folder)[0])
    assert torch.equal(state["w"], torch.arange(12.0).reshape(3, 4))


def test_existing_folder_is_used_as_is(model_folder, tmp_path):
    assert hub.resolve_model_folder(model_folder, home_path=str(tmp_path / "home")) == model_folder


def test_home_path_then_sat_home(model_folder, tmp_path, monkeypatch):
    home = str(tmp_path / "src")
    assert hub.resolve_model_folder("tiny", home_path=home) == model_folder
    monkeypatch.setenv("SAT_HOME", home)
    assert hub.resolve_model_folder("tiny") == model_folder
    with pytest.raises(CheckpointError, match="elsewhere/tiny"):  # explicit home_path wins over $SAT_HOME
        hub.resolve_model_folder("tiny", home_path=str(tmp_path / "elsewhere"))


@pytest.mark.parametrize("pack", [_zip, _targz])
def test_file_url_archives(model_folder, tmp_path, pack):
    archive = pack(model_folder, tmp_path / ("m.zip" if pack is _zip else "m.tar.gz"))
    home = tmp_path / "home"
    folder = hub.resolve_model_folder("tiny", home_path=str(home), url="file://" + archive)
    assert folder == str(home / "tiny")
    _assert_tiny(folder)
    assert sorted(os.listdir(home)) == ["tiny", "tiny.lock"]  # archive and temporaries are gone
    # second call: the folder is complete, nothing is downloaded again
    os.remove(archive)
    assert hub.resolve_model_folder("tiny", home_path=str(home), url="file://" + archive) == folder


def test_sha256_and_size_are_checked(model_folder, tmp_path):
    archive = _zip(model_folder, tmp_path / "m.zip")
    digest = hashlib.sha256(open(archive, "rb").read()).hexdigest()
    home = str(tmp_path / "home")
    with pytest.raises(CheckpointError, match="sha256 .* instead of 0000"):
        hub.resolve_model_folder("tiny", home_path=home, url=f"file://{archive}#sha256={'0' * 64}")
    with pytest.raises(CheckpointError, match="bytes instead of 5"):
        hub.resolve_model_folder("tiny", home_path=home, url=f"file://{archive}", size=5)
    assert not os.path.exists(os.path.join(home, "tiny"))
    _assert_tiny(hub.resolve_model_folder("tiny", home_path=home, url=f"file://{archive}#sha256={digest}"))


def test_stray_partial_and_interrupted_extraction_do_not_matter(model_folder, tmp_path):
    archive = _targz(model_folder, tmp_path / "m.tar.gz")
    data = open(archive, "rb").read()
    home = tmp_path / "home"
    home.mkdir()
    (home / "tiny.download.part").write_bytes(data[: len(data) // 2])  # an unkeyed partial (older sat_accel)
    os.makedirs(home / "tiny.tmp-extract-999")  # an interrupted earlier extraction is not a model folder
    folder = hub.resolve_model_folder("tiny", home_path=str(home), url=f"file://{archive}",
                                      sha256=hashlib.sha256(data).hexdigest())
    _assert_tiny(folder)


@pytest.fixture
def http_server(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_download_restarts_when_range_is_ignored(model_folder, tmp_path, http_server):
    served, base = http_server
    archive = _zip(model_folder, served / "m.zip")
    home = tmp_path / "home"
    home.mkdir()
    (home / "tiny.download.part").write_bytes(b"garbage that is not a prefix")  # server answers 200, not 206
    data = open(archive, "rb").read()
    folder = hub.resolve_model_folder("tiny", home_path=str(home), url=f"{base}/m.zip",
                                      sha256=hashlib.sha256(data).hexdigest())
    _assert_tiny(folder)


def test_http_error_is_clear(tmp_path, http_server):
    _, base = http_server
    with pytest.raises(CheckpointError, match="Cannot download .*missing.zip"):
        hub.resolve_model_folder("tiny", home_path=str(tmp_path / "home"), url=f"{base}/missing.zip")


# ---------------------------------------------------------------- malicious archives
def _tar_with(dest, members):
    with tarfile.open(dest, "w:gz") as tf:
        for info, payload in members:
            tf.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return str(dest)


def _file(name, payload=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, payload


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("members", [
    [_file("tiny/model_config.json"), _file("../evil")],
    [_file("tiny/model_config.json"), _file("/tmp/sat_accel_evil_abs")],
    [_file("tiny/model_config.json"), _link("tiny/escape", "../../evil")],
    [_file("tiny/model_config.json"), _link("tiny/escape", "/etc")],
    [_file("tiny/model_config.json"), _link("tiny/dir", "."), _file("tiny/dir/file")],
    [_file("tiny/model_config.json"), _link("tiny/hard", "../evil", tarfile.LNKTYPE)],
], ids=["dotdot", "absolute", "symlink-dotdot", "symlink-absolute", "write-through-link", "hardlink"])
def test_malicious_tar_is_refused(tmp_path, members):
    archive = _tar_with(tmp_path / "bad.tar.gz", members)
    home = tmp_path / "a" / "b" / "home"
    with pytest.raises(CheckpointError, match="Refusing to extract"):
        hub.resolve_model_folder("tiny", home_path=str(home), url=f"file://{archive}")
    assert not (home / "tiny").exists()
    assert not (tmp_path / "a" / "b" / "evil").exists() and not os.path.exists("/tmp/sat_accel_evil_abs")
    assert not [n for n in os.listdir(home) if "tmp" in n]


@pytest.mark.parametrize("name", ["../evil", "/tmp/sat_accel_evil_zip"])
def test_malicious_zip_is_refused(tmp_path, name):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("tiny/model_config.json", "{}")
        zf.writestr(zipfile.ZipInfo(name), "pwned")
    home = tmp_path / "home"
    with pytest.raises(CheckpointError, match="Refusing to extract"):
        hub.resolve_model_folder("tiny", home_path=str(home), url=f"file://{archive}")
    assert not (tmp_path / "evil").exists() and not os.path.exists("/tmp/sat_accel_evil_zip")


def test_archive_without_model_folder_is_refused(tmp_path):
    archive = tmp_path / "junk.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="holds no model folder"):
        hub.resolve_model_folder("tiny", home_path=str(tmp_path / "home"), url=f"file://{archive}")


# ---------------------------------------------------------------- concurrency and offline errors
_RACE = textwrap.dedent("""
    import logging, sys, time
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    from sat_accel import hub
    while time.time() < float(sys.argv[3]):
        time.sleep(0.005)
    print("RESULT", hub.resolve_model_folder("tiny", home_path=sys.argv[1], url=sys.argv[2]))
""")


@pytest.mark.multiprocess
def test_two_processes_download_once(model_folder, tmp_path):
    with open(os.path.join(model_folder, "blob.bin"), "wb") as f:  # big enough for the two to overlap
        f.write(os.urandom(32 << 20))
    archive = _zip(model_folder, tmp_path / "m.zip")
    home = str(tmp_path / "home")
    start = str(time.time() + 6)  # both processes call resolve at the same moment, after their imports
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, home, f"file://{archive}", start],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sum(o.count("Downloading tiny") for o in outputs) == 1, outputs
    assert all(f"RESULT {home}/tiny" in o for o in outputs)
    assert sorted(os.listdir(home)) == ["tiny", "tiny.lock"]
    _assert_tiny(os.path.join(home, "tiny"))


def test_offline_hub_id_lists_every_place_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        hub.resolve_model_folder("bert-base-uncased", home_path=str(tmp_path / "home"))
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    for place in (str(tmp_path / "bert-base-uncased"), str(tmp_path / "home" / "bert-base-uncased"),
                  "$SAT_HOME", "no url= was given", "HF_HUB_OFFLINE=1", "Hugging Face cache"):
        assert place in message


def test_unsupported_url_scheme(tmp_path):
    with pytest.raises(CheckpointError, match="Unsupported url scheme 'ftp'"):
        hub.resolve_model_folder("tiny", home_path=str(tmp_path), url="ftp://example.com/m.zip")
