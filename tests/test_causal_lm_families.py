"""GPT-2 and LLaMA-family (LLaMA, Llama-3 rope, Mistral, Qwen2) converted from transformers: logits with
left/right padding, gradients, conversion through AutoModel and the CLI, round trips, bad inputs."""
import json
import os
import subprocess
import sys

import pytest
import torch

from causal_lm_helpers import HF_CONFIGS, VOCAB, converted, hf_causal_lm
from sat_accel.convert.dispatch import hf_to_sat_checkpoint, supported_model_types
from sat_accel.convert.hf_gpt2 import sat_to_hf_gpt2
from sat_accel.convert.hf_llama import hf_llama_config_to_args, sat_to_hf_llama
from sat_accel.errors import CheckpointError, ConfigError
from sat_accel.generation import causal_inputs
from sat_accel.model import AutoModel, GPT2Model, LLaMAModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def padded_batch(padding: str, seq: int = 11):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, seq), generator=g)
    keep = torch.ones(3, seq, dtype=torch.long)
    if padding == "left":
        keep[1, :4], keep[2, :seq - 2] = 0, 0
    elif padding == "right":
        keep[1, seq - 4:], keep[2, 2:] = 0, 0
    return ids, keep


@pytest.mark.parametrize("padding", ["none", "left", "right"])
@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_logits_match_transformers_with_padding(name, padding):
    hf = hf_causal_lm(name)
    model, config = converted(hf)
    ids, keep = padded_batch(padding)
    mask, positions = causal_inputs(keep, sliding_window=config.get("sliding_window"))  # Mistral's window
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=keep, position_ids=positions).logits
        logits = model(ids, positions, mask)[0]
    real = keep.bool()  # padded positions' outputs are meaningless in both
    torch.testing.assert_close(logits[real], ref[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa", "qwen2"])
def test_gradients_match_transformers(name):
    hf = hf_causal_lm(name).train()
    hf.config.resid_pdrop = hf.config.embd_pdrop = hf.config.attn_pdrop = 0.0
    for module in hf.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model, config = converted(hf)
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ids, keep = padded_batch("left")
    mask, positions = causal_inputs(keep)
    labels = ids.masked_fill(keep == 0, -100)
    labels[:, 1:].masked_fill_(keep[:, :-1] == 0, -100)  # a token predicted from a padding position
    hf(input_ids=ids, attention_mask=keep, position_ids=positions, labels=labels).loss.backward()
    logits = model(ids, positions, mask)[0]
    torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100).backward()
    _, expected = hf_to_sat_checkpoint(hf.config.to_dict(), {n: p.grad for n, p in hf.named_parameters()})
    ours = {n: p.grad for n, p in model.named_parameters()}
    assert set(ours) == set(expected)
    for key, grad in expected.items():
        torch.testing.assert_close(ours[key], grad, atol=1e-5, rtol=0, msg=key)


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa", "llama3-rope-headdim", "qwen2"])
def test_round_trip_to_transformers_is_exact(name):
    hf = hf_causal_lm(name)
    config, state = hf_to_sat_checkpoint(hf.config.to_dict(), hf.state_dict())
    back = (sat_to_hf_gpt2 if name.startswith("gpt2") else sat_to_hf_llama)(state, config)
    original = hf.state_dict()
    if config.get("tie_word_embeddings"):
        original.pop("lm_head.weight")
    assert set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) for k in original)


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa"])
def test_automodel_converts_hf_folder_once_and_matches(name, tmp_path):
    hf = hf_causal_lm(name)
    folder = tmp_path / "hf"
    hf.save_pretrained(folder)
    home = tmp_path / "home"
    model, args = AutoModel.from_pretrained(str(folder), home_path=str(home))
    assert type(model).__name__ == {"gpt2": "GPT2Model", "llama-gqa": "LLaMAModel"}[name]
    converted_dirs = os.listdir(home / "converted")
    model.eval()
    ids, keep = padded_batch("left")
    mask, positions = causal_inputs(keep)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=keep, position_ids=positions).logits
        logits = model(ids, positions, mask)[0]
    torch.testing.assert_close(logits[keep.bool()], ref[keep.bool()], atol=1e-5, rtol=0)
    AutoModel.from_pretrained(str(folder), home_path=str(home))
    assert os.listdir(home / "converted") == converted_dirs  # cached: converted once


def test_cli_converts_llama_and_names_supported_types_for_others(tmp_path):
    hf = hf_causal_lm("qwen2")
    hf.save_pretrained(tmp_path / "hf")
    env = {**os.environ, "PYTHONPATH": ROOT}
    run = subprocess.run([sys.executable, "-m", "sat_accel.convert", str(tmp_path / "hf"), str(tmp_path / "sat")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    model, _ = LLaMAModel.from_pretrained(str(tmp_path / "sat"))
    assert "mixins.lm.lm_head.weight" not in model.state_dict()  # Qwen2's tied head
    assert model.transformer.layers[0].attention.query_key_value.bias is not None

    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["model_type"] = "falcon"
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    run = subprocess.run([sys.executable, "-m", "sat_accel.convert", str(tmp_path / "hf"), str(tmp_path / "x")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 2
    assert "model_type 'falcon'" in run.stderr and "gpt2" in run.stderr and "llama" in run.stderr


def test_supported_types_and_unsupported_features_are_one_sentence():
    assert {"bert", "gpt2", "llama", "mistral", "qwen2"} <= set(supported_model_types())
    base = HF_CONFIGS["llama-gqa"]().to_dict()
    with pytest.raises(CheckpointError, match="hidden_act='gelu'"):
        hf_llama_config_to_args({**base, "hidden_act": "gelu"})
    yarn = {**base, "rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}
    with pytest.raises(ConfigError, match="rope_scaling type 'yarn' is not supported"):
        LLaMAModel.from_model_config(hf_llama_config_to_args(yarn))
    with pytest.raises(CheckpointError, match="scale_attn_by_inverse_layer_idx"):
        hf_to_sat_checkpoint({**HF_CONFIGS["gpt2"]().to_dict(), "scale_attn_by_inverse_layer_idx": True}, {})


def test_llama_from_scratch_has_no_position_table_and_gqa_shapes():
    model = LLaMAModel(LLaMAModel.get_args(num_layers=1, hidden_size=32, num_attention_heads=4,
                                           num_multi_query_heads=2, vocab_size=50, inner_hidden_size=40))
    names = dict(model.named_parameters())
    assert "transformer.position_embeddings.weight" not in names
    assert names["transformer.layers.0.attention.query_key_value.weight"].shape == (32 + 2 * 2 * 8, 32)
    assert names["transformer.layers.0.mlp.dense_h_to_4h_gate.weight"].shape == (40, 32)
    with pytest.raises(ConfigError, match="num_multi_query_heads=3"):
        LLaMAModel(LLaMAModel.get_args(num_layers=1, hidden_size=32, num_attention_heads=4,
                                       num_multi_query_heads=3, vocab_size=50))
    gpt2 = GPT2Model(GPT2Model.get_args(num_layers=1, hidden_size=32, num_attention_heads=4))
    assert gpt2.transformer.word_embeddings.weight.shape == (50257, 32)


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa"])
def test_bf16_logits_stay_close_to_transformers_bf16(name):
    hf = hf_causal_lm(name)
    model, _ = converted(hf)
    hf, model = hf.to(torch.bfloat16), model.to(torch.bfloat16)
    ids, keep = padded_batch("left")
    mask, positions = causal_inputs(keep)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=keep, position_ids=positions).logits.float()
        logits = model(ids, positions, mask)[0]
    assert logits.dtype == torch.bfloat16
    real = keep.bool()
    # bf16 keeps ~3 significant digits; both sides round differently inside, so compare at that scale
    torch.testing.assert_close(logits.float()[real], ref[real], atol=3e-2, rtol=2e-2)


def test_is_rotary_emb_on_a_base_model_rotates_q_and_k():
    """SAT's default attention applies rotary positions with --is-rotary-emb; without it a BaseModel built with
    the flag had no positions at all (no table, no rotation)."""
    from sat_accel.model import BaseModel

    args = BaseModel.get_args(num_layers=2, hidden_size=32, num_attention_heads=4, vocab_size=50,
                              is_rotary_emb=True, hidden_dropout=0.0, attention_dropout=0.0)
    model = BaseModel(args).eval()
    assert "transformer.position_embeddings.weight" not in model.state_dict()
    with torch.no_grad():  # sharper attention than the 0.02-std init, so positions visibly matter
        for layer in model.transformer.layers:
            layer.attention.query_key_value.weight.mul_(20)
    ids, pos = torch.randint(0, 50, (2, 7)), torch.arange(7).expand(2, 7)
    reverse = list(range(6, -1, -1))
    with torch.no_grad():
        out = model(ids, pos, None)[0]
        shifted = model(ids, pos + 5, None)[0]
        permuted = model(ids[:, reverse], pos, None)[0]
    torch.testing.assert_close(out, shifted, atol=1e-5, rtol=0)  # rotary sees relative positions only
    assert not torch.allclose(out[:, reverse], permuted, atol=1e-3)  # ... but it does see them
