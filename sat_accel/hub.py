"""Model name -> local folder (docs/checkpoints.md): home dirs, url downloads, locks, safe extraction.

Resolution order: an existing folder; `<home_path or $SAT_HOME or ~/.sat_models>/<name>`; `url` (http(s) or
file://, zip/tar, resumable, size/sha256 checked); a Hugging Face id (cache, then the Hub when online),
converted once (by sat_accel.convert.hf_folder) and cached under the home path. Every download and
conversion builds a temporary sibling and renames it into place under a file lock, so a folder at the final
path is always complete.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import PurePosixPath

from filelock import FileLock
from tqdm.auto import tqdm

from .checkpoint_format import HF_CONFIG, LATEST, MODEL_CONFIG, durable_rename
from .convert.hf_folder import convert_hf_folder, hf_weights_file, is_hf_folder
from .errors import CheckpointError

logger = logging.getLogger(__name__)

_HF_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "*.txt", "tokenizer*"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_CHUNK_BYTES = 1 << 20


def sat_home(home_path: str | None = None) -> str:
    """The models folder: home_path, else $SAT_HOME, else ~/.sat_models."""
    return os.path.abspath(os.path.expanduser(home_path or os.environ.get("SAT_HOME") or "~/.sat_models"))


def resolve_model_folder(name: str, *, home_path: str | None = None, url: str | None = None,
                         sha256: str | None = None, size: int | None = None) -> str:
    """A local sat_accel (or legacy SAT) checkpoint folder for `name`; raises listing every place looked."""
    local = os.path.abspath(os.path.expanduser(name))
    if os.path.isdir(local):
        return _sat_folder(local, sat_home(home_path))
    root = sat_home(home_path)
    target = os.path.join(root, name)
    if os.path.isdir(target):
        return _sat_folder(target, root)
    if url:
        return download_model(name, url, root, sha256=sha256, size=size)
    found = _from_hf_hub(name, target) if _HUB_ID.match(name) else None
    if found:
        return found
    hub = ("the Hugging Face cache (HF_HUB_OFFLINE=1, so the Hub was not contacted)" if hf_offline()
           else "the Hugging Face cache and Hub") if _HUB_ID.match(name) else "no Hugging Face id (not a valid id)"
    raise CheckpointError(
        f"Cannot find model {name!r}: looked at the folder {local}, at {target} (home_path, else $SAT_HOME, else "
        f"~/.sat_models), no url= was given, and {hub}; put a sat_accel, SAT or Hugging Face folder at one of "
        "these places, pass url='https://...' or 'file://...', or go online to fetch a Hugging Face id.")


# ---------------------------------------------------------------- Hugging Face folders
def _sat_folder(path: str, root: str) -> str:
    """`path` itself, or its converted copy cached under the home folder when it is in HF format."""
    if not is_hf_folder(path):
        return path
    stat = os.stat(hf_weights_file(path))
    key = hashlib.sha1(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return _convert_cached(path, os.path.join(root, "converted", f"{os.path.basename(path)}-{key}"))


def _convert_cached(src: str, dst: str) -> str:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with FileLock(dst + ".lock"):
        if not os.path.isdir(dst):
            logger.info("Converting Hugging Face folder %s to %s.", src, dst)
            convert_hf_folder(src, dst)
    return dst


def hf_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks us not to touch the network."""
    from huggingface_hub import constants

    env = any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
              for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return env or bool(constants.HF_HUB_OFFLINE)


def _from_hf_hub(repo_id: str, target: str) -> str | None:
    """HF id -> converted folder at `target`: the local HF cache first, the Hub only when online."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    for local_only in (True,) if hf_offline() else (True, False):
        try:
            path = snapshot_download(repo_id, allow_patterns=_HF_PATTERNS, local_files_only=local_only,
                                     etag_timeout=5)
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
            logger.debug("Hugging Face lookup of %s (local_only=%s) failed: %s", repo_id, local_only, e)
            continue
        if is_hf_folder(path):
            return _convert_cached(path, target)
    return None


# ---------------------------------------------------------------- url downloads
def download_model(name: str, url: str, root: str, *, sha256: str | None = None, size: int | None = None) -> str:
    """Download + safely extract `url` into `<root>/<name>` once, even with concurrent processes."""
    url, fragment_sha = _split_sha(url)
    sha256 = sha256 or fragment_sha
    target = os.path.join(root, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with FileLock(target + ".lock"):
        if os.path.isdir(target):  # another rank or process finished while we waited
            return target
        logger.info("Downloading %s from %s.", name, url)
        archive = _download(url, target + ".download", sha256=sha256, size=size)
        safe_extract(archive, target)
        os.remove(archive)
    return target


def _split_sha(url: str) -> tuple[str, str | None]:
    parsed = urllib.parse.urlsplit(url)
    match = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", parsed.fragment or "")
    return (parsed._replace(fragment="").geturl(), match.group(1).lower()) if match else (url, None)


def _download(url: str, dest: str, *, sha256: str | None, size: int | None) -> str:
    """Stream `url` to `dest` with a progress bar, resuming `dest.part`; verify, then rename into place."""
    part = dest + ".part"
    done = os.path.getsize(part) if os.path.exists(part) else 0
    try:
        try:
            stream, total, resumed = _open(url, done)
        except urllib.error.HTTPError as e:
            if e.code != 416 or not done:
                raise
            os.remove(part)  # Range not satisfiable: the partial file is not a prefix we can trust
            done = 0
            stream, total, resumed = _open(url, 0)
    except OSError as e:
        raise CheckpointError(f"Cannot download {url} ({e}); check the url and network, or download it "
                              "yourself and pass the folder.") from e
    with stream, open(part, "ab" if resumed else "wb") as out, tqdm(
            total=total, initial=done if resumed else 0, unit="B", unit_scale=True, desc=os.path.basename(url),
            disable=None) as bar:
        while chunk := stream.read(_CHUNK_BYTES):
            out.write(chunk)
            bar.update(len(chunk))
    _verify(part, url, sha256, size)
    durable_rename(part, dest)
    return dest


def _open(url: str, offset: int):
    """(readable, total size or None, resumed?) — a server that ignores Range restarts from zero."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ("", "file"):
        path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path) if scheme else url
        total = os.path.getsize(path)
        stream = open(path, "rb")
        stream.seek(min(offset, total))
        return stream, total, True
    if scheme not in ("http", "https"):
        raise CheckpointError(f"Unsupported url scheme {scheme!r} in {url}; use http(s):// or file://.")
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    resumed = offset > 0 and response.status == 206
    length = response.headers.get("Content-Length")
    total = (int(length) + (offset if resumed else 0)) if length else None
    return response, total, resumed


def _verify(path: str, url: str, sha256: str | None, size: int | None) -> None:
    actual_size = os.path.getsize(path)
    problem = None
    if size is not None and actual_size != size:
        problem = f"{actual_size} bytes instead of {size}"
    elif sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK_BYTES):
                digest.update(chunk)
        if digest.hexdigest() != sha256.lower():
            problem = f"sha256 {digest.hexdigest()} instead of {sha256}"
    if problem:
        os.remove(path)
        raise CheckpointError(f"Download of {url} has {problem}; the file was deleted — check url/sha256/size "
                              "and retry.")


# ---------------------------------------------------------------- safe extraction
def safe_extract(archive: str, target: str) -> str:
    """Extract a zip/tar archive into `target` (atomically); refuses absolute paths, `..` and escaping links."""
    tmp = f"{target}.tmp-extract-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _check_members([(i.filename, _zip_link(zf, i)) for i in zf.infolist()], archive)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                _check_members([(m.name, m.linkname if m.issym() else None) for m in members], archive,
                               hard_links=[(m.name, m.linkname) for m in members if m.islnk()],
                               special=[m.name for m in members if m.isdev() or m.isfifo()])
                tf.extractall(tmp, filter="data")  # the stdlib's own checks, as a second line of defence
        else:
            raise CheckpointError(f"{archive} is neither a zip nor a tar archive; point url= at a .zip or .tar.gz.")
        entries = os.listdir(tmp)
        single = len(entries) == 1 and os.path.isdir(os.path.join(tmp, entries[0]))
        folder = os.path.join(tmp, entries[0]) if single else tmp
        if not any(os.path.exists(os.path.join(folder, f)) for f in (MODEL_CONFIG, LATEST, HF_CONFIG)):
            raise CheckpointError(f"{archive} holds no model folder (no {MODEL_CONFIG}, {LATEST} or {HF_CONFIG} at "
                                  "its top or in its single top folder); repack it.")
        durable_rename(folder, target)
    except (tarfile.TarError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"Cannot extract {archive} safely ({e}); the archive is damaged or malicious.") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _zip_link(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str | None:
    is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
    return zf.read(info).decode("utf-8", "replace") if is_link else None


def _check_members(members: list[tuple[str, str | None]], archive: str, hard_links: list[tuple[str, str]] = (),
                   special: list[str] = ()) -> None:
    """members: (name, symlink target or None); refuse anything that would land outside the folder."""
    links = {name.rstrip("/") for name, target in members if target is not None}
    bad = [f"{n} (device or fifo)" for n in special]
    bad += [f"{n} => {t}" for n, t in hard_links if not _inside("", t)]  # hard-link targets are archive paths
    for name, target in members:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
            bad.append(name)
        elif any("/".join(parts[:i]) in links for i in range(1, len(parts))):
            bad.append(f"{name} (inside a link)")  # writing through a link could follow it anywhere
        elif target is not None and not _inside(os.path.dirname(name), target):
            bad.append(f"{name} -> {target}")
    if bad:
        raise CheckpointError(f"Refusing to extract {archive}: {len(bad)} entries would land outside the model "
                              f"folder ({', '.join(bad[:5])}); the archive is unsafe — get it from a trusted source.")


def _inside(base: str, target: str) -> bool:
    if target.startswith(("/", "\\")):
        return False
    resolved = os.path.normpath(os.path.join("root", base, target))
    return resolved == "root" or resolved.startswith("root" + os.sep)
