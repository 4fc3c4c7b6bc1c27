"""Extracting a downloaded zip/tar into a model folder, refusing anything that would escape it or explode.

Refused before a byte is written: absolute paths, `..`, links that point (or entries that write through
links) outside the folder, devices and fifos, and archives whose members expand to more than
`max_expansion` times the archive's own size (default 20, or $SAT_MAX_EXTRACT_RATIO; model weights barely
compress, so a bigger ratio means a bomb or the wrong file). After extraction the folder must be a complete
model folder (weights present, every shard of an index), so a tar cut at a member boundary is not cached.
"""
from __future__ import annotations

import os
import re
import shutil
import tarfile
import zipfile
from pathlib import PurePosixPath

from .checkpoint_format import (HF_CONFIG, LATEST, MODEL_CONFIG, WEIGHTS_INDEX, durable_rename, file_inside,
                                read_json, resolve_load_dir)
from .errors import CheckpointError

DEFAULT_MAX_EXPANSION = 20


def max_expansion() -> float:
    """How many times its own size an archive may expand to: $SAT_MAX_EXTRACT_RATIO, else 20."""
    value = os.environ.get("SAT_MAX_EXTRACT_RATIO")
    try:
        return float(value) if value else DEFAULT_MAX_EXPANSION
    except ValueError as e:
        raise CheckpointError(f"$SAT_MAX_EXTRACT_RATIO={value!r} is not a number; set it to e.g. 50.") from e


def safe_extract(archive: str, target: str) -> str:
    """Extract a zip/tar archive into `target` (atomically); refuses absolute paths, `..`, escaping links,
    and expansion beyond max_expansion() times the archive size."""
    tmp = f"{target}.tmp-extract-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                _check_members([(i.filename, _zip_link(zf, i)) for i in infos], archive)
                _check_expansion(sum(i.file_size for i in infos), archive)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                _check_members([(m.name, m.linkname if m.issym() else None) for m in members], archive,
                               hard_links=[(m.name, m.linkname) for m in members if m.islnk()],
                               special=[m.name for m in members if m.isdev() or m.isfifo()])
                _check_expansion(sum(m.size for m in members if m.isfile()), archive)
                tf.extractall(tmp, filter="data")  # the stdlib's own checks, as a second line of defence
        else:
            raise CheckpointError(f"{archive} is neither a zip nor a tar archive; point url= at a .zip or .tar.gz.")
        folder = _model_folder_in(tmp, archive)
        durable_rename(folder, target)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"Cannot extract {archive} safely ({e}); the archive is damaged or malicious.") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _model_folder_in(tmp: str, archive: str) -> str:
    """The extracted model folder (the archive's top or its single top folder), checked to be complete."""
    entries = os.listdir(tmp)
    single = len(entries) == 1 and os.path.isdir(os.path.join(tmp, entries[0]))
    folder = os.path.join(tmp, entries[0]) if single else tmp
    if not any(os.path.exists(os.path.join(folder, f)) for f in (MODEL_CONFIG, LATEST, HF_CONFIG)):
        raise CheckpointError(f"{archive} holds no model folder (no {MODEL_CONFIG}, {LATEST} or {HF_CONFIG} at "
                              "its top or in its single top folder); repack it.")
    try:
        weights_dir = resolve_load_dir(folder).path if not os.path.isfile(os.path.join(folder, HF_CONFIG)) \
            else folder
        _check_shards(weights_dir)
    except CheckpointError as e:
        raise CheckpointError(f"{archive} does not hold a complete model folder ({e}); the archive is "
                              "truncated or incomplete — download it again or repack it.") from e
    return folder


def _check_shards(folder: str) -> None:
    index = os.path.join(folder, WEIGHTS_INDEX)
    if not os.path.isfile(index):
        return
    content = read_json(index, "Weights index", "re-save the checkpoint.")
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index} has no weight_map object")
    missing = sorted({str(name) for name in weight_map.values()
                      if not os.path.isfile(file_inside(folder, name, index))})
    if missing:
        raise CheckpointError(f"{index} names shards that are missing: {', '.join(missing[:5])}")


def _check_expansion(total_bytes: int, archive: str) -> None:
    ratio = max_expansion()
    limit = ratio * max(os.path.getsize(archive), 1)
    if total_bytes > limit:
        raise CheckpointError(f"Refusing to extract {archive}: its members expand to {total_bytes} bytes, more "
                              f"than {ratio:g} times the archive's {os.path.getsize(archive)} bytes (an archive "
                              "bomb or not a model); if you trust it, raise $SAT_MAX_EXTRACT_RATIO.")


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
