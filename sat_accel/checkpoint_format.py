"""The on-disk checkpoint format, owned here alone: file names, finding an iteration, reading, writing.

A run folder written by `--save` holds `latest` (the iteration to resume), `model_config.json` and one
folder per saved iteration (`<n>/` or `release/`) with `model.safetensors` (or shards + an index) and,
unless weights-only, `training_state/`. SAT's legacy `mp_rank_00_model_states.pt` is read too. Every
write goes to a temporary name, is fsynced and then renamed into place, so a crash never leaves a file or
folder that looks complete but is not. This module imports nothing of the package but `errors`; the model
layer (loading into a model) and the training layer (what a training checkpoint contains) build on it.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np
import torch
from accelerate.utils import convert_file_size_to_int
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import CheckpointError, ConfigError

# ---------------------------------------------------------------- layout names
LATEST = "latest"
MODEL_CONFIG = "model_config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
LEGACY_WEIGHTS = "mp_rank_00_model_states.pt"
RELEASE = "release"
TRAINING_STATE = "training_state"
OPTIMIZER, SCHEDULER, SCALER = "optimizer.pt", "scheduler.pt", "scaler.pt"
TRAINER_STATE, ARGS_FILE = "trainer_state.json", "args.json"
TIED_METADATA_KEY = "sat_accel.tied"  # safetensors metadata: {"alias": "kept name"} for tied weights
TMP_PREFIX = ".tmp-"  # anything named like this in a run folder is an unfinished save or a deletion
OLD_PREFIX = ".old-"  # an iteration being replaced by a re-save of the same iteration
HF_CONFIG = "config.json"  # a Hugging Face (transformers) folder, converted before loading
TOKENIZER_DIR = "tokenizer"  # a checkpoint's own tokenizer, recorded relative in model_config.json's tokenizer_type
_WEIGHT_FILES = (WEIGHTS, WEIGHTS_INDEX, LEGACY_WEIGHTS)
# Globals a SAT/DeepSpeed `.pt` needs beyond plain tensors: numpy RNG states (arrays and dtypes).
_NUMPY_CORE = getattr(np, "_core", None) or np.core
LEGACY_SAFE_GLOBALS = [_NUMPY_CORE.multiarray._reconstruct, np.ndarray, np.dtype,
                       *(type(np.dtype(t)) for t in ("uint32", "int64", "float64", "bool"))]


def parse_size(value: int | str) -> int:
    """'5GB' -> 5*10**9 bytes (KB/MB/GB decimal, KiB/MiB/GiB binary, as transformers' max_shard_size);
    plain byte counts ('1024', '200B', 1024) pass through."""
    text = str(value).strip()
    plain = text[:-1] if text[-1:] in ("b", "B") else text
    try:
        size = int(plain) if plain.isdigit() else convert_file_size_to_int(text)
    except ValueError:
        size = 0
    if size <= 0:
        raise ConfigError(f"--max-shard-size {value!r} is not a size; use a number of bytes or e.g. 500MB, 5GB.")
    return size


# ---------------------------------------------------------------- durable writes
def fsync_path(path: str) -> None:
    """Flush a file's data, or a directory's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str) -> None:
    """fsync every file and directory under `folder`."""
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_path(os.path.join(root, name))
        fsync_path(root)


def durable_rename(src: str, dst: str) -> None:
    """Rename `src` (file or folder) to `dst`, replacing a file there, and make the rename itself durable."""
    os.replace(src, dst)
    fsync_path(os.path.dirname(os.path.abspath(dst)))


def atomic_write_text(path: str, text: str) -> None:
    """Write `text` to a temporary sibling, fsync it and rename it over `path`: readers see old or new."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    durable_rename(tmp, path)


@contextmanager
def writing(path: str) -> Iterator[None]:
    """Report a writer's failure as an OSError naming `path`, as open() would: torch.save on a full disk
    raises RuntimeError('[enforce fail at inline_container.cc...] unexpected pos'), safetensors raises
    SafetensorError('... No space left on device')."""
    try:
        yield
    except (RuntimeError, SafetensorError) as e:
        detail = str(e).splitlines()[0][:200] if str(e) else ""
        code = errno.ENOSPC if "No space left" in detail else errno.EIO
        raise OSError(code, f"{type(e).__name__}: {detail} (a full disk?)", path) from e


def save_torch(obj: Any, path: str) -> None:
    """torch.save, failures reported by `writing`."""
    with writing(path):
        torch.save(obj, path)


def write_json(path: str, obj: Any) -> None:
    """Pretty JSON (non-JSON values as str); callers fsync the folder before publishing it."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)


# ---------------------------------------------------------------- safe reads
def safe_torch_load(path: str, *, what: str, advice: str, allowed_globals: Iterable = (),
                    mmap: bool = False) -> Any:
    """torch.load with weights_only=True (no code runs); a missing, damaged or unsafe file raises one
    CheckpointError naming `what` and `path` and ending with `advice`."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} {path} is missing; {advice}")
    try:
        try:
            with torch.serialization.safe_globals(list(allowed_globals)):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if not (mmap and "mmap can only be used" in str(e)):
                raise
            with torch.serialization.safe_globals(list(allowed_globals)):  # torch's old, non-zip format
                return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except Exception as e:  # noqa: BLE001 - UnpicklingError for foreign globals, RuntimeError/EOFError for damage
        refused = re.search(r"GLOBAL ([\w.]+)", str(e))
        if refused:  # torch names the global deep inside a long message: say it, and what to do, up front
            raise CheckpointError(f"Refused to load {what} {path}: it would load the global {refused.group(1)}, "
                                  "which safe loading refuses: a pickle that runs code — nothing from it ran; get "
                                  "a copy holding only tensors and plain data (e.g. safetensors) from a source you "
                                  "trust.") from e
        detail = str(e).splitlines()[0][:200] if str(e) else ""
        raise CheckpointError(f"Cannot read {what} {path} safely ({type(e).__name__}: {detail}); {advice}") from e


def read_json(path: str, what: str, advice: str) -> Any:
    """json.load that names the file and says what to do when it is not readable JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{what} {path} is not valid JSON ({e}); {advice}") from e


# ---------------------------------------------------------------- folders and iterations
def is_iteration_dir(path: str) -> bool:
    """True when `path` directly holds model weights (our safetensors or a legacy SAT `.pt`)."""
    return any(os.path.isfile(os.path.join(path, f)) for f in _WEIGHT_FILES)


def _iteration_of(name: str) -> int:
    return 0 if name == RELEASE else int(name)


def _available(run_dir: str) -> str:
    names = [n for n in os.listdir(run_dir) if (n.isdigit() or n == RELEASE)
             and is_iteration_dir(os.path.join(run_dir, n))]
    return ", ".join(sorted(names, key=_iteration_of)) or "none"


class IterationDir(NamedTuple):
    """One saved iteration: the folder holding its weights, and its number (0 for `release`)."""
    path: str
    iteration: int


def resolve_load_dir(path: str, load_iteration: int | None = None) -> IterationDir:
    """Run folder (uses `latest`) or iteration folder -> IterationDir(folder, iteration); clear errors."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isdir(path):
        raise CheckpointError(f"Checkpoint folder {path} does not exist; pass the run folder written by "
                              "--save (it holds `latest`) or one iteration folder inside it.")
    if is_iteration_dir(path):
        name = os.path.basename(path)
        iteration = _iteration_of(name) if (name.isdigit() or name == RELEASE) else 0
        if load_iteration is not None and load_iteration != iteration:
            raise CheckpointError(f"--load-iteration {load_iteration} conflicts with the iteration folder "
                                  f"{path}; pass the run folder {os.path.dirname(path)} instead.")
        return IterationDir(path, iteration)
    tag = str(load_iteration) if load_iteration is not None else read_latest(path)
    folder = os.path.join(path, tag)
    if not os.path.isdir(folder) and os.path.isdir(os.path.join(path, f"{OLD_PREFIX}{tag}")):
        folder = os.path.join(path, f"{OLD_PREFIX}{tag}")  # a re-save of this iteration was interrupted mid-swap
    if not is_iteration_dir(folder):
        raise CheckpointError(f"Iteration {tag} of {path} is missing or holds no weights ({folder}); "
                              f"available iterations: {_available(path)} — pass one with "
                              "--load-iteration N.")
    return IterationDir(folder, _iteration_of(tag))


def read_latest(run_dir: str) -> str:
    """The iteration tag (digits or 'release') that `<run_dir>/latest` names."""
    latest = os.path.join(run_dir, LATEST)
    if not os.path.isfile(latest):
        raise CheckpointError(f"{run_dir} has no `{LATEST}` file and holds no weights itself; pass the run "
                              "folder written by --save, an iteration folder, or pick one with --load-iteration "
                              f"N (available: {_available(run_dir)}).")
    with open(latest, encoding="utf-8") as f:
        tag = f.read().strip()
    if not (tag.isdigit() or tag == RELEASE):
        raise CheckpointError(f"{latest} contains {tag!r}, expected an iteration number or 'release'; "
                              "fix the file or pass --load-iteration N.")
    return tag


def resolve_config_paths(config: dict[str, Any], folder: str) -> dict[str, Any]:
    """SAT's rule: relative `*_path` values of a config file are relative to its folder. Returns a new dict."""
    return {k: os.path.join(folder, v) if k.endswith("_path") and isinstance(v, str) and not os.path.isabs(v) else v
            for k, v in config.items()}


def read_model_config(iteration_dir: str) -> dict[str, Any]:
    """model_config.json of an iteration folder (its own copy, else the run folder's); {} if none."""
    for folder in (iteration_dir, os.path.dirname(iteration_dir)):
        path = os.path.join(folder, MODEL_CONFIG)
        if os.path.isfile(path):
            config = read_json(path, "Model config", "restore it from the run that wrote the checkpoint.")
            if not isinstance(config, dict):
                raise CheckpointError(f"Model config {path} holds a JSON {type(config).__name__}, not an object of "
                                      "settings; restore it from the run that wrote the checkpoint.")
            return config
    return {}


# ---------------------------------------------------------------- reading weights
def read_weights(iteration_dir: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, tied aliases) from an iteration folder; safetensors tensors are mmapped, not copied."""
    if os.path.isfile(os.path.join(iteration_dir, WEIGHTS_INDEX)):
        return read_safetensors_index(iteration_dir)
    single = os.path.join(iteration_dir, WEIGHTS)
    if os.path.isfile(single):
        return read_safetensors(single)
    legacy = os.path.join(iteration_dir, LEGACY_WEIGHTS)
    if os.path.isfile(legacy):
        return read_legacy_pt(legacy), {}
    raise CheckpointError(f"No weights in {iteration_dir}: expected {WEIGHTS}, {WEIGHTS_INDEX} or "
                          f"{LEGACY_WEIGHTS}; pass a checkpoint folder written by sat_accel or SAT.")


def read_safetensors_index(folder: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All shards named by `<folder>/model.safetensors.index.json` (sat_accel's and transformers' layout)."""
    index = os.path.join(folder, WEIGHTS_INDEX)
    try:
        with open(index, encoding="utf-8") as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index} is unreadable ({e}); re-save the checkpoint.") from e
    state: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    for name in files:
        part, part_tied = read_safetensors(file_inside(folder, name, index))
        state.update(part)
        tied.update(part_tied)
    return state, tied


def file_inside(folder: str, name: Any, named_by: str) -> str:
    """`<folder>/<name>` for a file name read from a file (`named_by`); a name that is not a plain relative
    path inside `folder` (absolute, `..`, not a string) is refused, so a checkpoint cannot read elsewhere."""
    path = os.path.normpath(os.path.join(folder, name)) if isinstance(name, str) and name else None
    if path is None or os.path.isabs(name) or os.path.commonpath([os.path.abspath(folder), os.path.abspath(path)]) \
            != os.path.abspath(folder):
        raise CheckpointError(f"{named_by} names the file {name!r}, which is not inside {folder}; a checkpoint may "
                              "only refer to its own files — the checkpoint is damaged or malicious.")
    return path


def read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (mmapped) and the tied-alias map of one safetensors file; corrupt files name the file."""
    try:
        with safe_open(path, framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"Weights file {path} is truncated or corrupt ({e}); load an earlier "
                              "iteration with --load-iteration N or re-save it.") from e
    try:
        tied = json.loads(meta.get(TIED_METADATA_KEY, "{}"))
    except ValueError:
        tied = None
    if not isinstance(tied, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tied.items()):
        raise CheckpointError(f"Weights file {path} has damaged '{TIED_METADATA_KEY}' metadata (expected a JSON "
                              "object of alias -> name); re-save the checkpoint.")
    return state, tied


def read_legacy_pt(path: str) -> dict[str, torch.Tensor]:
    """The `module` dict of a SAT `mp_rank_00_model_states.pt`, unpickled with weights_only=True."""
    obj = safe_torch_load(path, what="legacy checkpoint", allowed_globals=LEGACY_SAFE_GLOBALS, mmap=True,
                          advice="it must be an intact SAT checkpoint holding only tensors and plain data.")
    module = obj.get("module") if isinstance(obj, dict) else None
    if not isinstance(module, dict):
        raise CheckpointError(f"Legacy checkpoint {path} has no `module` state dict; it is not a SAT "
                              "model checkpoint.")
    return module


# ---------------------------------------------------------------- writing weights
def _safetensors_ready(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """safetensors refuses shared storage: keep one name per tied tensor, copy other overlapping views."""
    first: dict[tuple, str] = {}
    out: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.data_ptr(), tuple(tensor.shape), tensor.stride(),
               tensor.dtype)
        if tensor.numel() and key in first:
            tied[name] = first[key]
            continue
        first.setdefault(key, name)
        out[name] = tensor
    users = Counter(t.untyped_storage().data_ptr() for t in out.values() if t.numel())
    for name, tensor in out.items():
        if not tensor.is_contiguous():
            out[name] = tensor.contiguous()
        elif tensor.numel() and users[tensor.untyped_storage().data_ptr()] > 1:
            out[name] = tensor.clone()
    return out, tied


def _shard(state: dict[str, torch.Tensor], max_shard_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    return shards


def write_weights(folder: str, state: dict[str, torch.Tensor], max_shard_size: int | str = "5GB") -> list[str]:
    """Write model.safetensors (or shards + model.safetensors.index.json above max_shard_size), fsynced."""
    state, tied = _safetensors_ready(state)
    shards = _shard(state, parse_size(max_shard_size))
    metadata = {"format": "pt", TIED_METADATA_KEY: json.dumps(tied, sort_keys=True)}
    if len(shards) == 1:
        names = [WEIGHTS]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        with writing(os.path.join(folder, name)):
            save_file(shard, os.path.join(folder, name), metadata=metadata)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": {k: n for n, shard in zip(names, shards) for k in shard}}
        write_json(os.path.join(folder, WEIGHTS_INDEX), index)
        names.append(WEIGHTS_INDEX)
    paths = [os.path.join(folder, n) for n in names]
    for path in paths:
        fsync_path(path)
    return paths


def save_model_folder(folder: str, state: dict[str, torch.Tensor], model_config: dict[str, Any],
                      max_shard_size: int | str = "5GB", extra_files: dict[str, str] | None = None) -> str:
    """Atomically create a from_pretrained-ready folder (model_config.json, latest, release/ weights; plus
    `extra_files`, {relative destination: source file}, e.g. a tokenizer)."""
    folder = os.path.abspath(folder)
    if os.path.exists(folder):
        raise CheckpointError(f"{folder} already exists; choose a new destination or delete it first.")
    tmp = f"{folder}{TMP_PREFIX}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, RELEASE))
    try:
        write_weights(os.path.join(tmp, RELEASE), state, max_shard_size)
        write_json(os.path.join(tmp, MODEL_CONFIG), model_config)
        for name, source in (extra_files or {}).items():
            os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
            shutil.copyfile(source, os.path.join(tmp, name))
        atomic_write_text(os.path.join(tmp, LATEST), RELEASE)
        fsync_tree(tmp)
        durable_rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
