"""HF conversion checks (docs/checkpoints.md, "Loading and conversion checks"): every family's converted shapes
are checked against config.json before anything is written, naming the tensor, its shape and the config.json
key; the converted-copy cache follows the source's content (config, every shard, tokenizer files)."""
import json
import os
import time

import pytest
import torch

from sat_accel.convert.hf_folder import convert_hf_folder
from sat_accel.errors import CheckpointError
from sat_accel.model import AutoModel

transformers = pytest.importorskip("transformers")
from causal_lm_helpers import HF_CONFIGS, hf_causal_lm  # noqa: E402

BERT = dict(hidden_size=8, num_attention_heads=2, num_hidden_layers=2, intermediate_size=16,
            max_position_embeddings=8, vocab_size=20)


def _save(model, folder, **config_changes):
    model.save_pretrained(folder)
    if config_changes:
        path = os.path.join(folder, "config.json")
        json.dump({**json.load(open(path)), **config_changes}, open(path, "w"))
    return str(folder)


def _hf_bert(folder, **config_changes):
    torch.manual_seed(0)
    return _save(transformers.BertModel(transformers.BertConfig(**BERT)), folder, **config_changes)


def _hf_vit(folder, **config_changes):
    config = transformers.ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=12,
                                    image_size=8, patch_size=4, num_channels=3)
    torch.manual_seed(0)
    return _save(transformers.ViTModel(config, add_pooling_layer=False), folder, **config_changes)


@pytest.mark.parametrize("name", ["gpt2-inner", "llama-gqa", "llama3-rope-headdim", "qwen2"])
def test_matching_configs_of_every_family_convert(tmp_path, name):
    # llama3-rope-headdim: head_dim 16 x 4 heads != hidden 32, so attention.dense is (32, 64), not (hidden, hidden)
    src = _save(hf_causal_lm(name), tmp_path / "hf")
    model, _ = AutoModel.from_pretrained(convert_hf_folder(src, str(tmp_path / "out")))
    assert sum(p.numel() for p in model.parameters()) > 0


def test_matching_vit_converts(tmp_path):
    convert_hf_folder(_hf_vit(tmp_path / "hf"), str(tmp_path / "out"))
    assert os.path.isdir(tmp_path / "out")


@pytest.mark.parametrize("build,changes,message", [
    (_hf_bert, {"intermediate_size": 24},
     r"layers.0.mlp.dense_h_to_4h.weight has shape \(16, 8\) but intermediate_size=24 implies \(24, 8\)"),
    (_hf_bert, {"max_position_embeddings": 12},
     r"position_embeddings.weight has shape \(8, 8\) but max_position_embeddings=12 implies \(12, 8\)"),
    (_hf_bert, {"type_vocab_size": 3},
     r"type_embeddings.weight has shape \(2, 8\) but type_vocab_size=3 implies \(3, 8\)"),
    (_hf_vit, {"intermediate_size": 10}, r"dense_h_to_4h.weight has shape \(12, 8\) but intermediate_size=10"),
    (lambda f, **c: _save(hf_causal_lm("gpt2-inner"), f, **c), {"n_inner": 60},
     r"dense_h_to_4h.weight has shape \(50, 24\) but n_inner=60 implies \(60, 24\)"),
    (lambda f, **c: _save(hf_causal_lm("llama-gqa"), f, **c), {"num_key_value_heads": 3},
     r"query_key_value.weight has shape \(80, 48\) but num_attention_heads=6, hidden_size=48, "
     r"num_key_value_heads=3 implies \(96, 48\)"),
    (lambda f, **c: _save(hf_causal_lm("qwen2"), f, **c), {"num_key_value_heads": 4},  # = heads: no grouping
     r"query_key_value.weight has shape \(64, 32\) but num_attention_heads=4, hidden_size=32, "
     r"num_key_value_heads=4 implies \(96, 32\)"),
])
def test_a_config_that_disagrees_with_its_weights_writes_nothing(tmp_path, build, changes, message):
    src = build(tmp_path / "hf", **changes)
    with pytest.raises(CheckpointError, match=r"config.json does not match its weights: .*" + message) as err:
        convert_hf_folder(src, str(tmp_path / "out"))
    assert "\n" not in str(err.value) and "came with these weights" in str(err.value)
    assert not os.path.exists(tmp_path / "out")


def _converted_copies(home):
    return sorted(n for n in os.listdir(os.path.join(home, "converted")) if not n.endswith(".lock"))


def test_a_changed_shard_or_tokenizer_file_is_converted_again(tmp_path):
    src = tmp_path / "hf"
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(**BERT))
    model.save_pretrained(src, max_shard_size="2KB")  # sharded: model.safetensors.index.json + shards
    (src / "vocab.txt").write_text("\n".join(f"tok{i}" for i in range(20)))
    home = str(tmp_path / "home")
    first, _ = AutoModel.from_pretrained(str(src), home_path=home)
    assert len(_converted_copies(home)) == 1
    index = json.load(open(src / "model.safetensors.index.json"))["weight_map"]
    time.sleep(0.01)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.add_(1.0)
    model.save_pretrained(tmp_path / "newer", max_shard_size="2KB")
    shard = index["embeddings.word_embeddings.weight"]
    os.replace(tmp_path / "newer" / shard, src / shard)  # same names, same index: only the shard changed
    second, _ = AutoModel.from_pretrained(str(src), home_path=home)
    assert len(_converted_copies(home)) == 2
    assert torch.equal(second.transformer.word_embeddings.weight, first.transformer.word_embeddings.weight + 1.0)
    (src / "vocab.txt").write_text("\n".join(f"other{i}" for i in range(20)))
    AutoModel.from_pretrained(str(src), home_path=home)
    assert len(_converted_copies(home)) == 3
    AutoModel.from_pretrained(str(src), home_path=home)  # unchanged source: the copy is reused
    assert len(_converted_copies(home)) == 3
