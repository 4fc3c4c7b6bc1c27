"""Model loading and checkpoint saving at BERT-base size (~110M parameters), measured side by side.

Loading (each measurement in a fresh process, methods alternated, medians):
  ours : AutoModel.from_pretrained(folder)  (meta-device build + safetensors mmap assigned, no copy)
  sat  : SAT's way: BertModel(args) with random init, torch.load(mp_rank_00_model_states.pt), load_state_dict
  hf   : transformers BertForMaskedLM.from_pretrained(folder) of the same weights in HF format
Scenarios: `warm` (files in the page cache) and `cold` (a fresh copy of the folder, fsynced and dropped
from the page cache with posix_fadvise(DONTNEED)). "load" is the call itself; "load+touch" also reads
every weight once (an mmap is lazy, so this is the honest end-to-end figure). Peak RSS is the growth of
the process's high-water mark during the load.
Saving: save_checkpoint of the same model with and without AdamW state (fsync included) and the size.

    python bench/load.py [--reps 5] [--threads 1] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch

ARCH = dict(num_layers=12, hidden_size=768, num_attention_heads=12, vocab_size=30522, max_sequence_length=512)
METHODS = ("ours", "sat", "hf")


def prepare(workdir: str) -> None:
    """Write the same random BERT-base weights in our, SAT's and transformers' format."""
    import transformers

    from sat_accel.convert.hf_bert import sat_args_to_hf_bert_config, sat_to_hf_bert
    from sat_accel.model import BertModel
    from sat_accel.training.checkpoint import save_model_folder

    torch.manual_seed(0)
    model = BertModel(BertModel.get_args(**ARCH))
    with torch.no_grad():  # as in real BERT checkpoints, so that transformers' tied decoder holds the same values
        model.mixins["bert-final"].lm_head.decoder.weight.copy_(model.transformer.word_embeddings.weight)
    state, config = model.state_dict(), model.get_model_config()
    save_model_folder(os.path.join(workdir, "ours"), state, config)
    sat = os.path.join(workdir, "sat")
    os.makedirs(os.path.join(sat, "1"))
    with open(os.path.join(sat, "latest"), "w") as f:
        f.write("1")
    with open(os.path.join(sat, "model_config.json"), "w") as f:
        json.dump(config, f)
    torch.save({"module": state}, os.path.join(sat, "1", "mp_rank_00_model_states.pt"))
    hf = transformers.BertForMaskedLM(transformers.BertConfig(**sat_args_to_hf_bert_config(config)))
    missing, unexpected = hf.load_state_dict(sat_to_hf_bert(state, config), strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    hf.save_pretrained(os.path.join(workdir, "hf"))


def load(method: str, folder: str) -> torch.nn.Module:
    if method == "ours":
        from sat_accel.model import AutoModel
        return AutoModel.from_pretrained(folder)[0]
    if method == "sat":
        from sat_accel.model import BertModel
        with open(os.path.join(folder, "model_config.json")) as f:
            config = json.load(f)
        model = BertModel(BertModel.get_args(**{k: v for k, v in config.items() if k != "model_class"}))
        model.load_state_dict(torch.load(os.path.join(folder, "1", "mp_rank_00_model_states.pt"),
                                         map_location="cpu", weights_only=True)["module"])
        return model.eval()
    import transformers
    return transformers.BertForMaskedLM.from_pretrained(folder).eval()


def _rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (high-water mark since the last reset) of this process, in MiB."""
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith(field + ":"))) / 1024


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        f.write("5")


def _drop_from_cache(folder: str) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def child(method: str, folder: str, scenario: str) -> dict:
    """One measurement in this (fresh) process."""
    import transformers  # noqa: F401 - imports are not part of the load time
    import sat_accel.model  # noqa: F401

    copy = None
    if scenario == "cold":
        copy = tempfile.mkdtemp(dir=os.path.dirname(folder))
        folder = shutil.copytree(folder, os.path.join(copy, os.path.basename(folder)))
        _drop_from_cache(folder)
    else:
        for root, _, files in os.walk(folder):  # make sure every byte is in the page cache
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    while f.read(1 << 24):
                        pass
    _reset_peak_rss()
    before = _rss_mb("VmRSS")
    start = time.perf_counter()
    model = load(method, folder)
    loaded = time.perf_counter()
    total = sum(float(p.double().sum()) for p in model.parameters())
    touched = time.perf_counter()
    embeddings = next(p for n, p in model.named_parameters() if n.endswith("word_embeddings.weight"))
    peak = _rss_mb("VmHWM")
    if copy:
        shutil.rmtree(copy)
    return {"load": loaded - start, "touch": touched - start, "peak_rss_mb": peak - before, "checksum": total,
            "embeddings": float(embeddings.double().sum())}


def measure_loads(workdir: str, reps: int, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    results: dict = {}
    for rep in range(reps):
        for scenario in ("warm", "cold"):
            order = METHODS if rep % 2 == 0 else tuple(reversed(METHODS))
            for method in order:
                out = subprocess.run([sys.executable, __file__, "--child", method, scenario, "--workdir", workdir,
                                      "--threads", str(threads)], env=env, capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault((scenario, method), []).append(row)
    # transformers ties the decoder to the embeddings (one parameter less), so compare it on those.
    checksums = {round(r["checksum"], 3) for (_, m), rows in results.items() if m != "hf" for r in rows}
    embeddings = {round(r["embeddings"], 3) for rows in results.values() for r in rows}
    assert len(checksums) == 1 and len(embeddings) == 1, f"loaders disagree: {checksums} {embeddings}"
    return {key: {m: statistics.median(r[m] for r in rows) for m in ("load", "touch", "peak_rss_mb")}
            for key, rows in results.items()}


def measure_saves(workdir: str) -> dict:
    from accelerate import Accelerator

    from sat_accel.model import BertModel
    from sat_accel.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = BertModel(BertModel.get_args(**ARCH))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # allocates exp_avg / exp_avg_sq: the real optimizer-state size
    accelerator = Accelerator(cpu=True)
    out = {}
    for label, no_optim in (("weights only (--no-save-optim)", True), ("weights + training state", False)):
        run_dir = os.path.join(workdir, f"save-{int(no_optim)}")
        args = argparse.Namespace(no_save_optim=no_optim, save_total_limit=None, max_shard_size="5GB")
        times = []
        for iteration in (1, 2, 3):
            start = time.perf_counter()
            save_checkpoint(accelerator, run_dir, iteration, model, optimizer, None, {"iteration": iteration}, args)
            times.append(time.perf_counter() - start)
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(os.path.join(run_dir, "1")) for f in fs)
        out[label] = {"save_s": statistics.median(times), "size_mb": size / 2**20}
    return out


def report(loads: dict, saves: dict) -> None:
    print("| scenario | measure | ours | SAT way | transformers | ours / SAT | ours / transformers |")
    print("|---|---|---|---|---|---|---|")
    for scenario in ("warm", "cold"):
        for measure, unit in (("load", "s"), ("touch", "s"), ("peak_rss_mb", "MiB")):
            o, s, h = (loads[(scenario, m)][measure] for m in METHODS)
            name = {"load": "load", "touch": "load+touch", "peak_rss_mb": "peak RSS growth"}[measure]
            fmt = (lambda v: f"{v:.3f} s") if unit == "s" else (lambda v: f"{v:.0f} MiB")
            print(f"| {scenario} | {name} | {fmt(o)} | {fmt(s)} | {fmt(h)} | {o / s:.3f} | {o / h:.3f} |")
    print()
    print("| checkpoint | save time (fsync incl.) | size of one iteration folder |")
    print("|---|---|---|")
    for label, row in saves.items():
        print(f"| {label} | {row['save_s']:.2f} s | {row['size_mb']:.0f} MiB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, deleted)")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "SCENARIO"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child[0], os.path.join(args.workdir, args.child[0]), args.child[1])))
        return
    workdir = args.workdir or tempfile.mkdtemp(prefix="sat_accel_bench_load_")
    try:
        prepare(workdir)
        print(f"torch {torch.__version__}, threads {args.threads}, reps {args.reps}, workdir {workdir}")
        report(measure_loads(workdir, args.reps, args.threads), measure_saves(workdir))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
