"""examples/gpt2_finetune.py: its LM loss equals transformers', and the whole flow (HF folder -> finetune
through training_main -> save -> AutoModel.from_pretrained -> filling_sequence) runs offline and learns."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import gpt2_finetune  # noqa: E402
from sat_accel.model import GPT2Model  # noqa: E402


def test_causal_lm_loss_and_windows_match_transformers(tmp_path):
    folder = gpt2_finetune.tiny_hf_gpt2(str(tmp_path / "hf"), vocab_size=30)
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    model, _ = GPT2Model.from_pretrained(folder, home_path=str(tmp_path / "home"))
    ids = torch.randint(0, 30, (3, 12))
    with torch.no_grad():
        torch.testing.assert_close(gpt2_finetune.causal_lm_loss(model.eval(), ids),
                                   hf(input_ids=ids, labels=ids).loss, atol=1e-5, rtol=0)
    windows = gpt2_finetune.Windows(list(range(20)), 8)
    assert len(windows) == 3 and windows[1]["input_ids"].tolist() == list(range(4, 12))


@pytest.mark.slow
def test_example_finetunes_saves_reloads_and_generates_offline(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SAT_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "gpt2_finetune.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    after = re.search(r"after finetuning:\s+'(.*)'", run.stdout).group(1)
    assert re.match(r"the cat (sits|naps|waits|hides) on the (mat|rug|box|bed)\.", after), after
    assert any((tmp_path / "checkpoints").glob("finetune-gpt2-*/120/model.safetensors"))
    assert any((tmp_path / "home" / "converted").iterdir())  # the HF folder was converted once
