"""load_hf_dataset: path parsing, local files, the processed cache, offline behaviour, bad input."""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import datasets
import pytest
import torch
from datasets import Dataset, DatasetDict, DatasetInfo, SplitDict, SplitInfo
from datasets.arrow_writer import ArrowWriter
from datasets.exceptions import DatasetNotFoundError

from sat_accel.data import hf
from sat_accel.data.hf import HubSource, load_hf_dataset, parse_hf_path
from sat_accel.errors import DataError, HookError

ROWS = [{"text": f"row {i}", "n": i} for i in range(6)]


def double(row: dict) -> dict:
    """A stateless process_fn (its fingerprint is stable)."""
    return {"ids": [row["n"], 2 * row["n"]], "label": row["n"] % 2}


class Counting:
    """process_fn that counts its calls (so a test can tell whether the cache was used)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, row: dict) -> dict:
        self.calls += 1
        return double(row)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fake_hub_cache(root: Path, repo: str, config: str, split: str, rows: list[dict]) -> None:
    """Lay out a dataset exactly as datasets' download cache does: <root>/<org>___<name>/<config>/<ver>/<hash>."""
    name = repo.split("/")[-1]
    folder = root / repo.replace("/", "___") / config / "0.0.0" / "0123abcd"
    folder.mkdir(parents=True)
    ds = Dataset.from_list(rows)
    with ArrowWriter(path=str(folder / f"{name}-{split}.arrow")) as writer:
        writer.write_table(ds.data.table)
        writer.finalize()
    splits = SplitDict(dataset_name=name)
    splits.add(SplitInfo(name=split, num_examples=len(rows), dataset_name=name))
    DatasetInfo(config_name=config, dataset_name=name, features=ds.features, splits=splits).write_to_directory(str(folder))


@pytest.mark.parametrize(
    "path, expected",
    [
        # SAT's name/subset/split first, then the org/name/split reading.
        ("hf://super_glue/boolq/validation", [("super_glue", "boolq", "validation"), ("super_glue/boolq", None, "validation")]),
        ("hf://google/boolq/validation", [("google", "boolq", "validation"), ("google/boolq", None, "validation")]),
        ("hf://google/boolq", [("google", "boolq", "train"), ("google/boolq", None, "train")]),
        ("hf://imdb/*/test", [("imdb", None, "test")]),  # '*' = no subset: no ambiguity
        ("hf://imdb", [("imdb", None, "train")]),  # split defaults to train
        ("hf://google/boolq/*/validation", [("google/boolq", None, "validation")]),  # 4 parts: org/name
        ("hf://org/name/cfg/test[:10]", [("org/name", "cfg", "test[:10]")]),
        ("super_glue/boolq/validation", [("super_glue", "boolq", "validation"), ("super_glue/boolq", None, "validation")]),
    ],
)
def test_parse_hf_path(path, expected):
    assert parse_hf_path(path) == [HubSource(*e) for e in expected]


@pytest.mark.parametrize("path", ["hf://", "hf://a//b", "hf://a/b/c/d/e", "hf://a/"])
def test_parse_hf_path_rejects_malformed(path):
    with pytest.raises(DataError, match="Cannot parse"):
        parse_hf_path(path)


def test_local_jsonl_processed_and_formatted(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    ds = load_hf_dataset(str(src), double, columns=["ids", "label"], cache_dir=str(tmp_path / "c"))
    assert len(ds) == 6
    item = ds[3]
    assert set(item) == {"ids", "label"}
    assert torch.equal(item["ids"], torch.tensor([3, 6])) and item["label"].item() == 1
    batch = ds[0:4]["label"]
    assert isinstance(batch, torch.Tensor) and batch.tolist() == [0, 1, 0, 1]


def test_columns_none_keeps_all_columns(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    ds = load_hf_dataset(str(src), double, cache_dir=str(tmp_path / "c"))
    assert set(ds.column_names) == {"text", "n", "ids", "label"}
    assert ds[2]["text"] == "row 2" and torch.equal(ds[2]["ids"], torch.tensor([2, 4]))


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_other_local_formats(tmp_path, suffix):
    src = tmp_path / f"d{suffix}"
    table = Dataset.from_list(ROWS)
    {".csv": table.to_csv, ".parquet": table.to_parquet, ".json": table.to_json}[suffix](str(src))
    ds = load_hf_dataset(str(src), double, columns=["label"], cache_dir=str(tmp_path / "c"))
    assert ds[:]["label"].tolist() == [0, 1, 0, 1, 0, 1]


def test_save_to_disk_folder_and_format_is_reset(tmp_path):
    folder = tmp_path / "saved"
    Dataset.from_list(ROWS).with_format("torch").save_to_disk(str(folder))
    seen = []

    def fn(row):
        seen.append(type(row["n"]))
        return double(row)

    ds = load_hf_dataset(str(folder), fn, columns=["ids"], cache_dir=str(tmp_path / "c"))
    assert ds[:]["ids"].shape == (6, 2)
    assert set(seen) == {int}  # process_fn sees plain python rows, as in SAT, whatever format was saved


def test_datasetdict_folder_asks_for_a_split(tmp_path):
    folder = tmp_path / "dd"
    DatasetDict({"train": Dataset.from_list(ROWS), "validation": Dataset.from_list(ROWS[:2])}).save_to_disk(str(folder))
    with pytest.raises(DataError, match="several splits"):
        load_hf_dataset(str(folder), double, cache_dir=str(tmp_path / "c"))
    ds = load_hf_dataset(str(folder / "validation"), double, cache_dir=str(tmp_path / "c"))
    assert len(ds) == 2


def test_second_call_reuses_cache_without_calling_process_fn(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    first, second = Counting(), Counting()
    a = load_hf_dataset(str(src), first, columns=["ids"], cache_dir=str(tmp_path / "c"), transformer_name="t1")
    b = load_hf_dataset(str(src), second, columns=["ids"], cache_dir=str(tmp_path / "c"), transformer_name="t1")
    assert first.calls >= 6 and second.calls == 0
    assert torch.equal(a[:]["ids"], b[:]["ids"])
    # It is a real datasets cache on disk: a save_to_disk folder under <cache_dir>/sat_accel_processed.
    folders = [p for p in (tmp_path / "c" / hf.PROCESSED_DIRNAME).iterdir() if not p.name.startswith(".")]
    assert len(folders) == 1 and (folders[0] / "state.json").exists()
    assert isinstance(datasets.load_from_disk(str(folders[0])), Dataset)


def test_new_transformer_name_and_rebuild_reprocess(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    kw = dict(cache_dir=str(tmp_path / "c"))
    load_hf_dataset(str(src), Counting(), transformer_name="t1", **kw)
    other, again = Counting(), Counting()
    load_hf_dataset(str(src), other, transformer_name="t2", **kw)
    load_hf_dataset(str(src), again, transformer_name="t1", rebuild=True, **kw)
    assert other.calls >= 6 and again.calls >= 6


def test_changed_source_file_invalidates_cache(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    kw = dict(columns=["label"], cache_dir=str(tmp_path / "c"), transformer_name="t")
    load_hf_dataset(str(src), Counting(), **kw)
    write_jsonl(src, [{"text": "x", "n": 7}])
    os.utime(src, ns=(time.time_ns() + 10**9,) * 2)  # coarse mtime filesystems: force a new stamp
    counting = Counting()
    ds = load_hf_dataset(str(src), counting, **kw)
    assert counting.calls >= 1 and ds[:]["label"].tolist() == [1]


def test_without_transformer_name_keyed_by_process_fn(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    calls = []
    real = hf.process_rows
    monkeypatch.setattr(hf, "process_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    load_hf_dataset(str(src), double, cache_dir=str(tmp_path / "c"))
    load_hf_dataset(str(src), double, cache_dir=str(tmp_path / "c"))  # same function: cache hit
    assert len(calls) == 1
    load_hf_dataset(str(src), lambda row: {"other": row["n"]}, cache_dir=str(tmp_path / "c"))
    assert len(calls) == 2  # a different function never reads the first one's cache


def test_tilde_in_cache_dir_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    load_hf_dataset(str(src), double, cache_dir="~/mycache", transformer_name="t")
    assert (tmp_path / "home" / "mycache" / hf.PROCESSED_DIRNAME).is_dir()
    assert not Path("~").exists()


def test_default_cache_dir_is_under_hf_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hfcache")
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    load_hf_dataset(str(src), double, transformer_name="t")
    assert any((tmp_path / "hfcache" / hf.PROCESSED_DIRNAME).iterdir())


def online_env_without_sockets(monkeypatch) -> list:
    """No offline switch anywhere; socket connections fail and are recorded (libraries may swallow the error)."""
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    attempts = []

    def refuse(sock, address, *args):
        attempts.append(address)
        raise OSError(f"test forbids network access to {address}")

    def refuse_lookup(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(f"test forbids looking up {host}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)
    return attempts


def test_offline_flag_alone_never_opens_a_socket(tmp_path, monkeypatch):
    attempts = online_env_without_sockets(monkeypatch)
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    ds = load_hf_dataset(str(src), double, columns=["label"], cache_dir=str(tmp_path / "c"), offline=True)
    assert len(ds) == 6 and attempts == []


def test_offline_hub_dataset_not_cached_fails_fast(tmp_path, monkeypatch):
    attempts = online_env_without_sockets(monkeypatch)
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_hf_dataset("hf://google/boolq/validation", double, cache_dir=str(tmp_path), offline=True)
    assert time.monotonic() - start < 5 and attempts == []
    msg = str(err.value)
    assert "offline" in msg and "'google/boolq' (no subset, split 'validation')" in msg and "local" in msg


def test_offline_env_variable_counts_as_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf, "_load_hub_online", lambda *a: pytest.fail("network path used while offline"))
    with pytest.raises(DataError, match="offline"):
        load_hf_dataset("hf://imdb/*/test", double, cache_dir=str(tmp_path))


def test_offline_reads_datasets_download_cache_for_org_name(tmp_path):
    rows = [{"question": "q", "passage": "p", "answer": True, "n": 5}]
    fake_hub_cache(tmp_path, "google/boolq", "default", "validation", rows)
    ds = load_hf_dataset("hf://google/boolq/validation", double, columns=["label"], cache_dir=str(tmp_path), offline=True)
    assert ds[:]["label"].tolist() == [1]


def test_offline_reads_cache_for_name_subset_split(tmp_path):
    fake_hub_cache(tmp_path, "super_glue", "boolq", "validation", [{"n": 2}, {"n": 3}])
    ds = load_hf_dataset("hf://super_glue/boolq/validation", double, columns=["ids"], cache_dir=str(tmp_path), offline=True)
    assert ds[:]["ids"].tolist() == [[2, 4], [3, 6]]


def test_online_tries_org_reading_after_sat_reading(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    tried = []

    def fake_online(source, root):
        tried.append(source)
        if source.repo == "google":
            raise DatasetNotFoundError("Dataset 'google' doesn't exist on the Hub")
        return Dataset.from_list(ROWS)

    monkeypatch.setattr(hf, "_load_hub_online", fake_online)
    ds = load_hf_dataset("hf://google/boolq/validation", double, cache_dir=str(tmp_path), transformer_name="t")
    assert tried == parse_hf_path("hf://google/boolq/validation") and len(ds) == 6
    # Second call: the processed cache of the reading that worked, no hub call at all.
    tried.clear()
    load_hf_dataset("hf://google/boolq/validation", double, cache_dir=str(tmp_path), transformer_name="t")
    assert tried == []


def test_missing_local_path_is_named(tmp_path):
    missing = tmp_path / "nope" / "train.jsonl"
    with pytest.raises(DataError, match="does not exist") as err:
        load_hf_dataset(str(missing), double)
    assert str(missing) in str(err.value)


def test_process_fn_must_return_a_dict(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(HookError, match="returned list for row 0"):
        load_hf_dataset(str(src), lambda row: [row["n"]], cache_dir=str(tmp_path / "c"))
    with pytest.raises(HookError, match="returned NoneType for row 4"):
        load_hf_dataset(str(src), lambda row: None if row["n"] == 4 else {"a": 1}, cache_dir=str(tmp_path / "c"))


def test_process_fn_keys_must_be_consistent(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    fn = lambda row: {"a": 1, "b": 2} if row["n"] != 3 else {"a": 1}  # noqa: E731
    with pytest.raises(HookError, match=r"returned keys \['a'\] for row 3 but \['a', 'b'\] for row 0"):
        load_hf_dataset(str(src), fn, cache_dir=str(tmp_path / "c"))


def test_columns_must_exist(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(DataError, match=r"columns \['input_ids'\] are not in dataset"):
        load_hf_dataset(str(src), double, columns=["ids", "input_ids"], cache_dir=str(tmp_path / "c"))


def test_empty_dataset_is_an_error(tmp_path):
    src = tmp_path / "empty.csv"
    src.write_text("text,n\n")
    with pytest.raises(DataError, match="has 0 rows"):
        load_hf_dataset(str(src), double, cache_dir=str(tmp_path / "c"))


def test_unsupported_file_type(tmp_path):
    src = tmp_path / "d.txt"
    src.write_text("hello\n")
    with pytest.raises(DataError, match="Unsupported data file"):
        load_hf_dataset(str(src), double, cache_dir=str(tmp_path / "c"))


def test_num_proc_only_for_big_datasets():
    assert hf.num_proc_for(100) is None
    big = hf.num_proc_for(10**7)
    assert big is None if (os.cpu_count() or 1) < 2 else 2 <= big <= hf.MAX_PROC


@pytest.mark.slow
def test_multiprocess_map_gives_same_result(tmp_path, monkeypatch):
    rows = [{"text": "x", "n": i} for i in range(400)]
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    monkeypatch.setattr(hf, "num_proc_for", lambda n: 2)
    ds = load_hf_dataset(str(src), double, columns=["ids"], cache_dir=str(tmp_path / "c"))
    assert ds[:]["ids"][:, 1].tolist() == [2 * i for i in range(400)]


WORKER = r'''
import json, os, sys
import torch.distributed as dist
from sat_accel.data.hf import load_hf_dataset

src, cache, log = sys.argv[1:4]
dist.init_process_group("gloo")
rank = dist.get_rank()

def process_fn(row):
    with open(log, "a") as f:
        f.write(f"{rank}\n")
    return {"ids": [row["n"], 2 * row["n"]]}

ds = load_hf_dataset(src, process_fn, columns=["ids"], cache_dir=cache, transformer_name="t")
with open(os.path.join(cache, f"result{rank}.json"), "w") as f:
    json.dump(ds[:]["ids"].tolist(), f)
dist.barrier()
os._exit(0)
'''


@pytest.mark.multiprocess
def test_main_process_builds_first_others_read_its_cache(tmp_path):
    import subprocess

    src = write_jsonl(tmp_path / "d.jsonl", ROWS)
    (tmp_path / "worker.py").write_text(WORKER)
    cache, log = tmp_path / "cache", tmp_path / "calls.log"
    cache.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tmp_path / "worker.py"), str(src), str(cache), str(log)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    # Judged by what the ranks wrote (gloo may abort at interpreter exit after a good run).
    assert all((cache / f"result{r}.json").exists() for r in (0, 1)), proc.stderr[-3000:]
    assert set(log.read_text().split()) == {"0"}  # only rank 0 ran process_fn
    results = [json.loads((cache / f"result{r}.json").read_text()) for r in (0, 1)]
    assert results[0] == results[1] == [[r["n"], 2 * r["n"]] for r in ROWS]


def test_public_import_path():
    import sat_accel

    assert sat_accel.load_hf_dataset is load_hf_dataset
