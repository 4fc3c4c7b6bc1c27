"""``--async-save``: checkpoints written by a background thread while training goes on.

The training thread stops only to *copy* what a checkpoint holds (weights, optimizer state, schedule,
grad-scaler state, this rank's RNG, the counters) into CPU memory; one background worker per rank then
writes exactly what the synchronous save writes, the same way (training/checkpoint.py): a temporary
folder, every file fsynced, the folder renamed into place, `model_config.json` and `latest` replaced last,
retention after that. So a crash (kill -9 included) at any moment leaves `latest` naming a complete
checkpoint, as without the flag.

* At most one save is in flight: a new save (and the end of training, SIGTERM included) first waits for the
  previous one.
* Ranks agree: the workers of all ranks step through prepare / write / publish together over a separate
  gloo process group (never the training one, so no collective runs between threads of one group); a
  failure on any rank removes the temporary folder on every rank's behalf and is raised on every rank at the
  next save or at the end.
* DeepSpeed and FSDP keep sharded optimizer state that their engines write with collectives: there the
  save stays synchronous (one warning).
"""
from __future__ import annotations

import argparse
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

from ..checkpoint_format import TMP_PREFIX, TRAINING_STATE, fsync_path, fsync_tree, save_torch
from . import checkpoint, sharded_state

logger = logging.getLogger(__name__)

__all__ = ["AsyncCheckpointer", "StoragePool", "cpu_copy"]


@dataclass
class Snapshot:
    """Everything one rank writes for one checkpoint, already copied off the training tensors."""
    run_dir: str
    iteration: int
    main: bool
    rank: int
    args: argparse.Namespace          # a copy: the flags the files record (and max shard size, tokenizer)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    hf_config: dict | None = None
    rng: dict | None = None            # None: weights-only checkpoint
    shared: dict[str, Any] = field(default_factory=dict)   # training_state/ file name -> state (main rank)
    extra_state: dict = field(default_factory=dict)
    storages: list = field(default_factory=list)  # the CPU storages above, for StoragePool.refill


class StoragePool:
    """The CPU storages of the last finished snapshot, reused by the next one: copying into memory that is
    already mapped costs a plain memcpy, where fresh buffers of a BERT-base-sized state cost 1-2 s of page
    faults per save (bench/RESULTS.md)."""

    def __init__(self) -> None:
        self.free: dict[int, list[torch.UntypedStorage]] = {}

    def take(self, nbytes: int) -> torch.UntypedStorage | None:
        spare = self.free.get(nbytes)
        return spare.pop() if spare else None

    def refill(self, storages: list[torch.UntypedStorage]) -> None:
        """Offer `storages` (no longer referenced by a writer) to the next snapshot, replacing older ones."""
        self.free = {}
        for storage in storages:
            self.free.setdefault(storage.nbytes(), []).append(storage)


def cpu_copy(obj: Any, memo: dict | None = None, pool: StoragePool | None = None) -> Any:
    """A deep copy of `obj` whose tensors are new CPU tensors; tensors that share storage still share it (tied
    weights stay tied, so the safetensors writer keeps one copy and records the alias). With `pool`, storages
    of the same size are taken from it and overwritten instead of allocated."""
    memo = {} if memo is None else memo
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach()
        key = (tensor.untyped_storage().data_ptr(), tensor.device)
        storage = memo.get(key)
        if storage is None:
            storage = memo[key] = _copied_storage(tensor.untyped_storage(), pool)
        return torch.empty(0, dtype=tensor.dtype).set_(storage, tensor.storage_offset(), tensor.size(),
                                                       tensor.stride())
    if isinstance(obj, dict):
        return {k: cpu_copy(v, memo, pool) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(cpu_copy(v, memo, pool) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v, memo, pool) for v in obj)
    return obj


def _copied_storage(source: torch.UntypedStorage, pool: StoragePool | None) -> torch.UntypedStorage:
    spare = pool.take(source.nbytes()) if pool is not None else None
    if spare is not None:
        return spare.copy_(source)
    return source.cpu().clone() if source.device.type == "cpu" else source.cpu()


def take_snapshot(accelerator, run_dir: str, iteration: int, model, optimizer, lr_scheduler, extra_state: dict,
                  args: argparse.Namespace, pool: StoragePool | None = None) -> Snapshot:
    """Copy this rank's part of a checkpoint into CPU memory (the only part of an async save that stalls)."""
    main = accelerator.is_main_process
    with_optim = optimizer is not None and not getattr(args, "no_save_optim", False)
    memos: list[dict] = [{}, {}, {}]  # weights, optimizer/schedule state, extra state: each keeps its own ties
    snap = Snapshot(os.path.abspath(run_dir), iteration, main, accelerator.process_index,
                    argparse.Namespace(**cpu_copy(vars(args))) if args is not None else argparse.Namespace())
    if main:
        snap.weights = cpu_copy(accelerator.get_state_dict(model, unwrap=True), memos[0], pool)
        snap.config, snap.hf_config = checkpoint.checkpoint_configs(accelerator, model, args)
    if with_optim:
        snap.rng = checkpoint._rng_state()
        if main:
            snap.shared = cpu_copy(checkpoint.shared_state(accelerator, optimizer, lr_scheduler), memos[1], pool)
            snap.extra_state = cpu_copy(extra_state, memos[2], pool)
    snap.storages = [storage for memo in memos for storage in memo.values()]
    return snap


class AsyncCheckpointer:
    """One background save at a time, per rank; construct it on every rank (it creates a process group)."""

    def __init__(self, accelerator) -> None:
        self.accelerator = accelerator
        self.synchronous = sharded_state.is_sharded(accelerator)
        if self.synchronous:
            logger.warning("--async-save: DeepSpeed/FSDP write their sharded optimizer state with collectives, so "
                           "checkpoints are saved synchronously.")
        distributed = accelerator.num_processes > 1 and dist.is_initialized()
        self.group = dist.new_group(backend="gloo") if distributed and not self.synchronous else None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.pool = StoragePool()
        self._written: list = []  # storages of the snapshot in flight, reusable once it is written

    def save(self, run_dir: str, iteration: int, model, optimizer, lr_scheduler, extra_state: dict,
             args: argparse.Namespace) -> None:
        """Wait for the previous save, copy the state, and start writing it in the background."""
        if self.synchronous:
            checkpoint.save_checkpoint(self.accelerator, run_dir, iteration, model, optimizer, lr_scheduler,
                                       extra_state, args)
            return
        self.wait()
        snap = take_snapshot(self.accelerator, run_dir, iteration, model, optimizer, lr_scheduler, extra_state, args,
                             self.pool)
        self._written = snap.storages
        self.thread = threading.Thread(target=self._work, args=(snap,), name=f"sat-async-save-{iteration}")
        self.thread.start()

    def wait(self) -> None:
        """Block until the save in flight (if any) is complete on every rank; raise its error on every rank."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None
            self.pool.refill(self._written)  # the writer is done with them (failed or not)
            self._written = []
        error, self.error = self.error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """wait(), then release the reusable CPU buffers (the end of training)."""
        try:
            self.wait()
        finally:
            self.pool = StoragePool()

    def _work(self, snap: Snapshot) -> None:
        tmp = os.path.join(snap.run_dir, f"{TMP_PREFIX}{snap.iteration}")
        try:
            steps: list[tuple[str, Callable[[], None]]] = [
                ("preparing", lambda: snap.main and checkpoint._start_save(snap.run_dir, tmp, snap.rng is not None)),
                ("writing", lambda: write_snapshot(snap, tmp)),
                ("publishing", lambda: snap.main and checkpoint._publish(snap.run_dir, tmp, snap.iteration,
                                                                         snap.config))]
            for step, action in steps:
                self._agreed_step(step, action, snap, tmp)
            if snap.main:
                retain(snap)
        except BaseException as e:  # noqa: BLE001 - handed to the training thread by wait()
            self.error = e

    def _agreed_step(self, step: str, action: Callable[[], Any], snap: Snapshot, tmp: str) -> None:
        """Run `action`, then agree over the side group; any rank's failure fails the step everywhere."""
        def any_rank_failed(failed_here: bool) -> bool:
            if self.group is None:
                return failed_here
            flags = [None] * dist.get_world_size(self.group)
            dist.all_gather_object(flags, failed_here, group=self.group)
            return any(flags)

        checkpoint.run_agreed_step(step, action, any_rank_failed, snap.main, snap.run_dir, snap.iteration, tmp,
                                   where=" in the background")


def write_snapshot(snap: Snapshot, tmp: str) -> None:
    """This rank's files of the checkpoint, fsynced (the main rank's whole folder)."""
    if snap.rng is not None:
        path = os.path.join(tmp, TRAINING_STATE, f"rng_state_{snap.rank}.pth")
        save_torch(snap.rng, path)
        fsync_path(path)
    if not snap.main:
        return
    checkpoint.write_model_files(tmp, snap.weights, snap.config, snap.hf_config, snap.args)
    if snap.rng is not None:
        checkpoint.write_shared_state(tmp, snap.shared, snap.extra_state, snap.args)
    fsync_tree(tmp)


def retain(snap: Snapshot) -> None:
    """--save-total-limit after the new checkpoint is published (a failure only wastes space)."""
    try:
        checkpoint.apply_retention(snap.run_dir, getattr(snap.args, "save_total_limit", None), keep=snap.iteration)
    except OSError as e:
        logger.warning("Could not delete old checkpoints in %s (%s); the new checkpoint is saved.", snap.run_dir, e)
    logger.info("Saved checkpoint %s/%d in the background (%s).", snap.run_dir, snap.iteration,
                "with training state" if snap.rng is not None else "weights only")
