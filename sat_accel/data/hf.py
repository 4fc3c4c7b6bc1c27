"""load_hf_dataset: a Hugging Face (or local) dataset, processed row by row once, cached on disk.

Path rule (after stripping ``hf://``, split on ``/``; a subset of ``*`` means "no subset"):

=========================  =====================================================================
``name``                   repo ``name``, no subset, split ``train``
``a/b``                    (``a``, subset ``b``, ``train``), else repo ``a/b``, no subset, ``train``
``a/b/split``              (``a``, subset ``b``, ``split``), else repo ``a/b``, no subset, ``split``
``a/*/split``              repo ``a``, no subset, ``split``
``org/name/subset/split``  repo ``org/name``, subset (``*`` = none), ``split``
=========================  =====================================================================

Three parts are ambiguous (``super_glue/boolq/validation`` is name/subset/split, ``google/boolq/
validation`` is org/name/split), so both readings are tried, SAT's first; the 4-part form names an
org repo without ambiguity. Paths without ``hf://`` that exist on disk are local: json/jsonl/csv/parquet
files or ``save_to_disk`` folders. See docs/datasets.md for the cache key and offline behaviour.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import datasets
from datasets import Dataset, DatasetDict
from datasets.exceptions import DatasetGenerationError
from datasets.fingerprint import Hasher

from sat_accel.checkpoint_format import durable_rename
from sat_accel.errors import DataError, HookError

logger = logging.getLogger(__name__)

HF_PREFIX = "hf://"
DEFAULT_SPLIT = "train"
LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
PROCESSED_DIRNAME = "sat_accel_processed"
# Below this many rows per worker, multi-process map costs more (process start, pickling) than it saves.
MIN_ROWS_PER_PROC = 50_000
MAX_PROC = 8
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class HubSource:
    """One reading of an ``hf://`` path: hub repo id, subset (config) or None, split."""

    repo: str
    subset: Optional[str]
    split: str

    def describe(self) -> str:
        """Human-readable 'repo (subset X) split Y' for messages."""
        subset = f"subset '{self.subset}'" if self.subset else "no subset"
        return f"'{self.repo}' ({subset}, split '{self.split}')"

    def identity(self) -> dict:
        """What the processed cache is keyed on for this source."""
        return {"hub": self.repo, "subset": self.subset, "split": self.split}


@dataclass(frozen=True)
class LocalSource:
    """A local data file or ``save_to_disk`` folder."""

    path: Path

    def describe(self) -> str:
        """The path, for messages."""
        return f"local '{self.path}'"

    def identity(self) -> dict:
        """Path plus (name, size, mtime) of every file, so an edited file never reuses a stale cache."""
        files = [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*") if p.is_file())
        stats = [(str(p.relative_to(self.path.parent)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        return {"local": str(self.path), "files": stats}


Source = Union[HubSource, LocalSource]


def parse_hf_path(path: str) -> list[HubSource]:
    """Readings of an ``hf://`` path (prefix optional), in the order they are tried (see module doc)."""
    body = path[len(HF_PREFIX):] if path.startswith(HF_PREFIX) else path
    parts = body.split("/")
    if not body or any(not p for p in parts) or len(parts) > 4:
        raise DataError(
            f"Cannot parse dataset path {path!r}; write hf://name[/subset][/split] or "
            f"hf://org/name/subset/split (subset '*' for none)."
        )
    sub = lambda s: None if s == "*" else s  # noqa: E731
    if len(parts) == 4:
        return [HubSource(f"{parts[0]}/{parts[1]}", sub(parts[2]), parts[3])]
    if len(parts) == 1:
        return [HubSource(parts[0], None, DEFAULT_SPLIT)]
    split = parts[2] if len(parts) == 3 else DEFAULT_SPLIT
    if parts[1] == "*":
        return [HubSource(parts[0], None, split)]
    return [HubSource(parts[0], parts[1], split), HubSource(f"{parts[0]}/{parts[1]}", None, split)]


def resolve_source(path: str) -> list[Source]:
    """Local file/folder if ``path`` has no ``hf://`` and exists (or looks like a file path), else hub readings."""
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"Dataset path must be a string, got {type(path).__name__} {path!r}; pass hf://... or a file path.")
    path = os.fspath(path)
    if path.startswith(HF_PREFIX):
        return parse_hf_path(path)
    local = Path(path).expanduser()
    if local.exists():
        return [LocalSource(local.resolve())]
    if path.startswith(("/", ".", "~")) or local.suffix.lower() in LOCAL_BUILDERS:
        raise DataError(
            f"Local dataset path {str(local)!r} does not exist; check the path, or write hf://{path} for a hub dataset."
        )
    return parse_hf_path(path)  # SAT accepts hub names without the hf:// prefix


def load_hf_dataset(
    path: str,
    process_fn: Callable[[dict], Mapping[str, Any]],
    columns: Optional[Sequence[str]] = None,
    cache_dir: Optional[str] = None,
    offline: bool = False,
    rebuild: bool = False,
    transformer_name: Optional[str] = None,
) -> Dataset:
    """Load ``path`` (hub or local), apply ``process_fn(row) -> dict`` to every row, cache, return it.

    The processed dataset is saved under ``<cache_dir>/sat_accel_processed/`` keyed by (source, subset,
    split, transformer_name — or a hash of ``process_fn`` when no name is given) and reused on later
    calls; ``rebuild=True`` reprocesses. The main process builds first, the others then read its cache.
    Returns a map-style ``datasets.Dataset`` formatted as torch tensors for ``columns`` (None: all).
    """
    if not callable(process_fn):
        raise HookError(f"process_fn must be callable, got {type(process_fn).__name__}; pass a function row -> dict.")
    if isinstance(columns, str):
        columns = [columns]
    sources = resolve_source(path)
    raw_root = Path(os.path.expanduser(str(cache_dir))) if cache_dir else Path(datasets.config.HF_DATASETS_CACHE)
    offline = offline_requested(offline)
    with _main_process_first() as is_main:
        dataset = _load_or_build(
            path, sources, process_fn, columns, raw_root, offline, rebuild and is_main, transformer_name
        )
    return _format(dataset, columns, path)


def offline_requested(offline: bool) -> bool:
    """True when the caller asked for offline mode or HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set."""
    env = (os.environ.get(v, "").upper() in _TRUE for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
    return bool(offline or datasets.config.HF_HUB_OFFLINE or any(env))


def _load_or_build(path, sources, process_fn, columns, raw_root, offline, rebuild, transformer_name) -> Dataset:
    """Processed cache hit for the first source that has one, else load raw, process and save."""
    processed_root = raw_root / PROCESSED_DIRNAME
    proc_id = transformer_name or _function_hash(process_fn)
    if not rebuild and proc_id is not None:
        for source in sources:
            folder = processed_root / cache_folder_name(source, transformer_name, proc_id)
            if (folder / "state.json").exists():
                logger.info("Loading processed %s from %s", source.describe(), folder)
                return datasets.load_from_disk(str(folder))
    source, raw = _load_raw(path, sources, raw_root, offline)
    if len(raw) == 0:
        raise DataError(f"Dataset {path!r} ({source.describe()}) has 0 rows; check the split name or the file contents.")
    logger.info(
        "Processing %s (%d rows) with process_fn; pass rebuild=True to redo it, or change transformer_name "
        "when process_fn changes.", source.describe(), len(raw),
    )
    if proc_id is None:
        return process_rows(raw, process_fn, columns, path, work_dir=None)
    folder = processed_root / cache_folder_name(source, transformer_name, proc_id)
    processed_root.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=".map-", dir=processed_root))
    try:
        _save_atomic(process_rows(raw, process_fn, columns, path, work_dir), folder)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return datasets.load_from_disk(str(folder))


def cache_folder_name(source: Source, transformer_name: Optional[str], proc_id: str) -> str:
    """Readable prefix + hash of (source identity, processing id); changes when a local file changes."""
    if isinstance(source, HubSource):
        label = f"{source.repo}_{source.subset or 'all'}_{source.split}"
    else:
        label = source.path.name
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{label}_{transformer_name or 'fn'}")[:96]
    digest = hashlib.sha256(json.dumps([source.identity(), proc_id], sort_keys=True).encode()).hexdigest()
    return f"{label}-{digest[:16]}"


def _function_hash(process_fn: Callable) -> Optional[str]:
    """datasets' fingerprint of process_fn (code + captured values), or None when it cannot be hashed."""
    try:
        return "fn-" + Hasher.hash(process_fn)
    except Exception as exc:  # noqa: BLE001 - any pickling failure just means "no cache"
        logger.warning("process_fn cannot be hashed (%s); pass transformer_name=... to cache the result.", exc)
        return None


def _load_raw(path: str, sources: list[Source], raw_root: Path, offline: bool) -> tuple[Source, Dataset]:
    """The unprocessed dataset from the first source reading that resolves."""
    if isinstance(sources[0], LocalSource):
        return sources[0], _load_local(sources[0].path, raw_root).with_format(None)
    failures = []
    for source in sources:
        try:
            loaded = _load_hub_cached(source, raw_root) if offline else _load_hub_online(source, raw_root)
            return source, loaded.with_format(None)
        except DataError:
            raise
        except (FileNotFoundError, ValueError) as exc:
            failures.append(f"{source.describe()}: {str(exc).splitlines()[0]}")
    tried = "; ".join(failures)
    if offline:
        raise DataError(
            f"Dataset {path!r} is not cached and offline mode is on (looked for {tried}; in "
            f"{' and '.join(_cache_roots(raw_root))}); "
            f"load it once online with the same cache_dir, or save it to a local .jsonl/.parquet file or a "
            f"save_to_disk folder and pass that path instead."
        )
    raise DataError(f"Dataset {path!r} was not found on the Hugging Face Hub (tried {tried}); check the name, subset and split.")


def _load_hub_online(source: HubSource, raw_root: Path) -> Dataset:
    """datasets.load_dataset (uses datasets' own download cache)."""
    try:
        return datasets.load_dataset(source.repo, source.subset, split=source.split, cache_dir=str(raw_root))
    except ConnectionError as exc:
        raise DataError(
            f"Could not reach the Hugging Face Hub for {source.describe()} ({exc}); check the network, or pass "
            f"offline=True with a cached copy, or a local file path."
        ) from exc


def _load_hub_cached(source: HubSource, raw_root: Path) -> Dataset:
    """A hub dataset from datasets' cache only, with no network call and no global offline switch."""
    from datasets.packaged_modules.cache.cache import Cache

    error: Exception = FileNotFoundError("not in the datasets cache")
    for root in _cache_roots(raw_root):
        try:
            builder = Cache(cache_dir=root, repo_id=source.repo, dataset_name=source.repo.split("/")[-1],
                            config_name=source.subset, version="auto", hash="auto")
            return builder.as_dataset(split=source.split)
        except (FileNotFoundError, ValueError) as exc:
            error = exc
    raise error


def _cache_roots(raw_root: Path) -> list[str]:
    """Where offline lookups search datasets' download cache: cache_dir, then HF_DATASETS_CACHE."""
    return list(dict.fromkeys([str(raw_root), str(datasets.config.HF_DATASETS_CACHE)]))


def _load_local(path: Path, raw_root: Path) -> Dataset:
    """A json/jsonl/csv/parquet file (through datasets' packaged builders) or a save_to_disk folder."""
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError as exc:
            raise DataError(
                f"Folder {str(path)!r} is not a datasets save_to_disk folder; pass a file "
                f"({', '.join(sorted(LOCAL_BUILDERS))}) or a folder written by Dataset.save_to_disk."
            ) from exc
        if isinstance(loaded, DatasetDict):
            raise DataError(
                f"Folder {str(path)!r} holds several splits {sorted(loaded)}; pass one of them as "
                f"{str(path)!r}/<split>, e.g. {str(path / next(iter(loaded)))!r}."
            )
        return loaded
    builder = LOCAL_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(
            f"Unsupported data file {str(path)!r}; use one of {', '.join(sorted(LOCAL_BUILDERS))} or a save_to_disk folder."
        )
    reader = {"json": Dataset.from_json, "csv": Dataset.from_csv, "parquet": Dataset.from_parquet}[builder]
    try:  # not load_dataset: it pings the hub (download counts) even for local files unless offline is set
        return reader(str(path), cache_dir=str(raw_root))
    except (ValueError, DatasetGenerationError) as exc:
        if "corresponds to no data" in str(exc):
            raise DataError(f"Dataset {str(path)!r} has 0 rows; check the file contents.") from exc
        raise DataError(
            f"Could not read {str(path)!r} as {builder} ({str(exc).splitlines()[0]}); check the file is valid {builder}."
        ) from exc


def process_rows(raw: Dataset, process_fn: Callable, columns, path: str, work_dir: Optional[Path]) -> Dataset:
    """Apply process_fn to every row (batched map, several processes for big datasets), checking outputs."""
    keys = _check_output(process_fn(raw[0]), 0, None)
    if columns is not None:
        _check_columns(columns, set(raw.column_names) | set(keys), path)
    n_proc = num_proc_for(len(raw))
    cache_file = str(work_dir / "map.arrow") if work_dir is not None else None
    return raw.map(
        RowsToBatch(process_fn, keys), batched=True, with_indices=True, num_proc=n_proc,
        cache_file_name=cache_file, load_from_cache_file=False, desc="process_fn",
    )


def num_proc_for(n_rows: int) -> Optional[int]:
    """Worker processes for the map: one per MIN_ROWS_PER_PROC rows, at most the CPU count (and 8)."""
    n = min(os.cpu_count() or 1, MAX_PROC, n_rows // MIN_ROWS_PER_PROC)
    return n if n >= 2 else None


class RowsToBatch:
    """Batched-map adapter for a per-row process_fn; checks every row returns a dict with the same keys."""

    def __init__(self, process_fn: Callable, keys: tuple[str, ...]):
        self.process_fn = process_fn
        self.keys = keys

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in self.keys}
        names = list(batch)
        for i, index in enumerate(indices):
            result = self.process_fn({name: batch[name][i] for name in names})
            _check_output(result, index, self.keys)
            for key in self.keys:
                out[key].append(result[key])
        return out


def _check_output(result: Any, index: int, keys: Optional[tuple[str, ...]]) -> tuple[str, ...]:
    """The sorted keys of one process_fn result; raises HookError naming the row when it is unusable."""
    if not isinstance(result, Mapping):
        raise HookError(
            f"process_fn returned {type(result).__name__} for row {index}; it must return a dict of column -> value."
        )
    got = tuple(sorted(result))
    if keys is not None and got != keys:
        raise HookError(
            f"process_fn returned keys {list(got)} for row {index} but {list(keys)} for row 0; "
            f"return the same keys for every row."
        )
    return got


def _check_columns(columns: Sequence[str], available: set, path: str) -> None:
    """Raise DataError when ``columns`` names a column the processed dataset does not have."""
    missing = [c for c in columns if c not in available]
    if missing:
        raise DataError(
            f"columns {missing} are not in dataset {path!r} after process_fn (it has {sorted(available)}); "
            f"fix `columns` or return those keys from process_fn."
        )


def _format(dataset: Dataset, columns: Optional[Sequence[str]], path: str) -> Dataset:
    """Torch formatting for ``columns`` (None: every column)."""
    if columns is not None:
        _check_columns(columns, set(dataset.column_names), path)
        columns = list(columns)
    return dataset.with_format("torch", columns=columns)


def _save_atomic(dataset: Dataset, folder: Path) -> None:
    """save_to_disk into a temporary folder, then rename; a concurrent writer that wins the rename is fine."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        dataset.save_to_disk(str(tmp / "data"))
        if folder.exists():  # rebuild=True replaces the previous cache
            shutil.rmtree(folder)
        try:
            durable_rename(str(tmp / "data"), str(folder))
        except OSError:
            if not (folder / "state.json").exists():
                raise
            logger.debug("Another process wrote %s first; using its copy.", folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _main_process_first() -> Iterator[bool]:
    """Rank 0 runs the block first, the other ranks after it (only when a process group exists).

    Not Accelerate's PartialState().main_process_first(): load_hf_dataset also runs outside training_main,
    in a process group the user started with torch.distributed, and there a fresh PartialState on CPU does
    not join that group, so every rank would think it is the main one and build the cache at once."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        yield True
        return
    is_main = dist.get_rank() == 0
    if not is_main:
        dist.barrier()
    try:
        yield is_main
    finally:
        if is_main:
            dist.barrier()
