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
import urllib.parse

from filelock import FileLock

from .archive import safe_extract
from .convert.hf_folder import convert_hf_folder, is_hf_folder, source_fingerprint
from .download import download_file
from .errors import CheckpointError

logger = logging.getLogger(__name__)

_HF_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "*.txt", "tokenizer*"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


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
    target = _inside_home(name, root)
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


def _inside_home(name: str, root: str) -> str:
    """`<root>/<name>`, refusing a name that would leave the models folder (absolute, `..`)."""
    target = os.path.normpath(os.path.join(root, name))
    if os.path.commonpath([root, target]) != root or target == root:
        raise CheckpointError(f"Model name {name!r} would resolve outside the models folder {root} (to {target}); "
                              "use a plain name such as 'bert-base-uncased' (subfolders allowed, no '..'), or pass "
                              "an existing folder.")
    return target


# ---------------------------------------------------------------- Hugging Face folders
def _sat_folder(path: str, root: str) -> str:
    """`path` itself, or its converted copy cached under the home folder when it is in HF format."""
    if not is_hf_folder(path):
        return path
    # Keyed by the source's content (config.json included), so an edited source is converted again.
    key = hashlib.sha1(f"{path}|{source_fingerprint(path)}".encode()).hexdigest()[:12]
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
    target = _inside_home(name, root)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with FileLock(target + ".lock"):
        if os.path.isdir(target):  # another rank or process finished while we waited
            return target
        logger.info("Downloading %s from %s.", name, url)
        # Partial downloads are keyed by url: another url for the same name never continues this one.
        url_key = hashlib.sha256(url.encode()).hexdigest()[:16]
        archive = download_file(url, f"{target}.download-{url_key}", sha256=sha256, size=size)
        safe_extract(archive, target)
        os.remove(archive)
    return target


def _split_sha(url: str) -> tuple[str, str | None]:
    parsed = urllib.parse.urlsplit(url)
    match = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", parsed.fragment or "")
    return (parsed._replace(fragment="").geturl(), match.group(1).lower()) if match else (url, None)
