"""from_pretrained / AutoModel: both call orders, (model, args) return, meta-device loading, mixins in
finetune, prefix, build_only, legacy SAT `.pt` folders, HF folders converted on the fly, the convert CLI."""
import argparse
import json
import logging
import os
import random

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from sat_accel.convert.__main__ import main as convert_main
from sat_accel.errors import CheckpointError
from sat_accel.model import AutoModel, BertModel, MLPHeadMixin
from sat_accel.model.loading import from_pretrained
from sat_accel.training import checkpoint as ckpt

ARCH = dict(num_layers=2, hidden_size=32, num_attention_heads=4, vocab_size=50, max_sequence_length=16)


class ClassifierBert(BertModel):
    """SAT's finetune idiom: drop the MLM head, add a classification head mixin."""

    def __init__(self, args, transformer=None, **kwargs):
        super().__init__(args, transformer=transformer, **kwargs)
        self.del_mixin("bert-final")
        self.add_mixin("classification_head", MLPHeadMixin(args.hidden_size, 8, 1))


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    return BertModel(BertModel.get_args(**ARCH)).eval()


@pytest.fixture(scope="module")
def bert_folder(bert, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("models") / "tiny-bert")
    return ckpt.save_model_folder(folder, bert.state_dict(), bert.get_model_config())


def _batch():
    ids = torch.randint(0, ARCH["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(0))
    return dict(input_ids=ids, token_type_ids=torch.zeros_like(ids))


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_both_argument_orders_and_new_args(bert, bert_folder):
    user = argparse.Namespace(num_layers=6, hidden_size=64, fp16=False, mode="inference", custom="kept")
    m1, a1 = BertModel.from_pretrained(bert_folder)
    m2, a2 = BertModel.from_pretrained(user, bert_folder)
    m3, a3 = BertModel.from_pretrained(bert_folder, user)
    m4, _ = BertModel.from_pretrained(name=bert_folder, args=user)
    for model in (m1, m2, m3, m4):
        _assert_same_weights(bert, model)
        assert not model.training
    assert (a1.num_layers, a1.hidden_size, a1.num_types) == (2, 32, 2)  # model_config.json wins
    assert a2.custom == "kept" and a3.custom == "kept" and a2 is not user
    assert (user.num_layers, user.hidden_size) == (6, 64)  # the caller's Namespace is not mutated
    with torch.no_grad():
        torch.testing.assert_close(m1(**_batch())[0], bert(**_batch())[0], rtol=0, atol=0)


def test_meta_build_loads_without_random_init(bert, bert_folder):
    state = torch.get_rng_state()
    model, _ = BertModel.from_pretrained(bert_folder)
    assert torch.equal(torch.get_rng_state(), state)  # no random init happened: built on meta, assigned
    assert not any(p.is_meta for p in model.parameters())
    _assert_same_weights(bert, model)


def test_automodel_picks_class_and_build_only(bert, bert_folder):
    model, args = AutoModel.from_pretrained(bert_folder)
    assert type(model) is BertModel and args.model_class == "BertModel"
    _assert_same_weights(bert, model)
    built, _ = AutoModel.from_pretrained(bert_folder, build_only=True)
    assert type(built) is BertModel
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in bert.state_dict().items()}
    assert not torch.equal(built.transformer.word_embeddings.weight, bert.transformer.word_embeddings.weight)


def test_automodel_unknown_class_lists_registered(bert, tmp_path):
    folder = ckpt.save_model_folder(str(tmp_path / "m"), bert.state_dict(), {**bert.get_model_config(),
                                                                           "model_class": "NoSuchModel"})
    with pytest.raises(CheckpointError, match=r"'NoSuchModel', which is not registered \(registered: .*BertModel"):
        AutoModel.from_pretrained(folder)


def test_finetune_reinitialises_new_mixins_inference_refuses(bert, bert_folder, sat_log):
    args = argparse.Namespace(mode="finetune")
    torch.manual_seed(3)
    with sat_log.at_level(logging.INFO):
        model, _ = ClassifierBert.from_pretrained(bert_folder, args)
    assert "re-initialised" in sat_log.text
    head = model.mixins["classification_head"].layers[0].weight
    assert 0.001 < float(head.detach().std()) < 0.02  # MLPHeadMixin's N(0, 0.005), not garbage from skip_init
    trunk = {k: v for k, v in bert.state_dict().items() if k.startswith("transformer.")}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trunk.items())
    with pytest.raises(CheckpointError, match="mixins.classification_head.layers.0.weight"):
        ClassifierBert.from_pretrained(bert_folder, argparse.Namespace(mode="inference"))


def test_prefix_loads_an_encoder_out_of_a_bigger_model(bert, tmp_path):
    state = {f"encoder.{k}": v for k, v in bert.state_dict().items()}
    state["decoder.extra"] = torch.zeros(3)
    folder = ckpt.save_model_folder(str(tmp_path / "big"), state, bert.get_model_config())
    model, _ = BertModel.from_pretrained(folder, prefix="encoder.")
    _assert_same_weights(bert, model)
    with pytest.raises(CheckpointError, match="prefix 'nothing.'"):
        BertModel.from_pretrained(folder, prefix="nothing.")


def test_run_folder_latest_and_specific_iteration(bert, tmp_path):
    accelerator = Accelerator(cpu=True)
    args = argparse.Namespace(no_save_optim=True, save_total_limit=None, max_shard_size="5GB")
    ckpt.save_checkpoint(accelerator, str(tmp_path), 10, bert, None, None, {}, args)
    changed = BertModel(BertModel.get_args(**ARCH))
    ckpt.save_checkpoint(accelerator, str(tmp_path), 20, changed, None, None, {}, args)
    _assert_same_weights(changed, AutoModel.from_pretrained(str(tmp_path))[0])
    _assert_same_weights(bert, AutoModel.from_pretrained(str(tmp_path), specific_iteration=10)[0])
    _assert_same_weights(bert, AutoModel.from_pretrained(str(tmp_path / "10"))[0])


def test_params_dtype_and_overwrite_args(bert, bert_folder):
    model, args = BertModel.from_pretrained(bert_folder, params_dtype=torch.bfloat16,
                                            overwrite_args={"hidden_dropout": 0.0})
    assert args.hidden_dropout == 0.0
    weight = model.transformer.word_embeddings.weight
    assert weight.dtype == torch.bfloat16
    assert torch.equal(weight, bert.transformer.word_embeddings.weight.to(torch.bfloat16))


def test_legacy_sat_folder_loads_with_weights_only(bert, tmp_path):
    folder = tmp_path / "legacy"
    (folder / "1").mkdir(parents=True)
    (folder / "latest").write_text("1")
    (folder / "model_config.json").write_text(json.dumps(bert.get_model_config()))
    torch.save({"module": bert.state_dict(), "iteration": 1, "np_rng_state": np.random.get_state(),
                "random_rng_state": random.getstate(), "torch_rng_state": torch.get_rng_state(),
                "client_lr_scheduler": {"start_lr": 1e-4, "decay_style": "cosine"}},
               folder / "1" / "mp_rank_00_model_states.pt")
    model, _ = AutoModel.from_pretrained(str(folder))
    _assert_same_weights(bert, model)


def test_legacy_pickle_with_code_is_refused(bert, tmp_path):
    folder = tmp_path / "evil"
    (folder / "1").mkdir(parents=True)
    (folder / "latest").write_text("1")
    (folder / "model_config.json").write_text(json.dumps(bert.get_model_config()))
    torch.save({"module": bert.state_dict(), "payload": os.system}, folder / "1" / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match="Refused to load legacy checkpoint .* the global posix.system"):
        AutoModel.from_pretrained(str(folder))


class Tied(torch.nn.Module):
    """Not a BaseModel: tied weights and a non-persistent buffer computed in __init__."""

    def __init__(self, args, **kwargs):
        super().__init__()
        self.embed = torch.nn.Embedding(args.vocab_size, 4)
        self.out = torch.nn.Linear(4, args.vocab_size, bias=False)
        self.out.weight = self.embed.weight
        self.register_buffer("scale", torch.full((4,), 2.0), persistent=args.persistent)


@pytest.mark.parametrize("persistent", [True, False])
def test_tied_weights_and_non_persistent_buffers(tmp_path, persistent):
    source = Tied(argparse.Namespace(vocab_size=9, persistent=persistent))
    folder = ckpt.save_model_folder(str(tmp_path / "tied"), source.state_dict(),
                                    {"model_class": "Tied", "vocab_size": 9, "persistent": persistent})
    model, _ = from_pretrained(Tied, folder)
    assert model.out.weight is model.embed.weight
    assert torch.equal(model.embed.weight, source.embed.weight)
    assert torch.equal(model.scale, torch.full((4,), 2.0))  # a meta-built buffer would have no values


def test_hf_tied_decoder_is_untied_after_loading(bert, tmp_path):
    state = dict(bert.state_dict())
    state["mixins.bert-final.lm_head.decoder.weight"] = state["transformer.word_embeddings.weight"]  # HF-style
    folder = ckpt.save_model_folder(str(tmp_path / "hf-tied"), state, bert.get_model_config())
    model, _ = BertModel.from_pretrained(folder)
    decoder = model.mixins["bert-final"].lm_head.decoder.weight
    embed = model.transformer.word_embeddings.weight
    assert torch.equal(decoder, embed)
    with torch.no_grad():
        embed.add_(1.0)
    assert not torch.equal(decoder, embed)  # an update of one parameter must not leak into the other


def test_missing_name_and_unknown_folder_errors(tmp_path):
    with pytest.raises(CheckpointError, match="needs a model name"):
        BertModel.from_pretrained(argparse.Namespace())
    with pytest.raises(CheckpointError, match="Cannot find model"):
        BertModel.from_pretrained("no-such-model", home_path=str(tmp_path))


# ---------------------------------------------------------------- Hugging Face folders
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    config = transformers.BertConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                                     intermediate_size=37, max_position_embeddings=16, vocab_size=50)
    config.architectures = ["BertForMaskedLM"]
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(config).eval()
    folder = str(tmp_path_factory.mktemp("hf") / "tiny-hf-bert")
    hf.save_pretrained(folder)
    return folder, hf


def test_hf_folder_is_converted_once_and_matches_transformers(hf_folder, tmp_path):
    folder, hf = hf_folder
    home = str(tmp_path / "home")
    model, args = BertModel.from_pretrained(folder, home_path=home)
    converted = os.listdir(os.path.join(home, "converted"))
    assert len([n for n in converted if not n.endswith(".lock")]) == 1
    stamp = os.path.getmtime(os.path.join(home, "converted", sorted(converted)[0]))
    again, _ = AutoModel.from_pretrained(folder, home_path=home)  # cached: not converted again
    assert os.path.getmtime(os.path.join(home, "converted", sorted(converted)[0])) == stamp
    _assert_same_weights(model, again)
    batch = _batch()
    with torch.no_grad():
        expected = hf(**batch).logits
        logits, *_ = model(**batch)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_headless_hf_bert_loads_in_inference_mode(tmp_path):
    config = transformers.BertConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=1,
                                     intermediate_size=37, max_position_embeddings=16, vocab_size=50)
    config.architectures = ["BertModel"]
    hf = transformers.BertModel(config, add_pooling_layer=False).eval()
    hf.save_pretrained(str(tmp_path / "headless"))
    model, args = AutoModel.from_pretrained(str(tmp_path / "headless"), home_path=str(tmp_path / "home"))
    assert "bert-final" not in model.mixins and args.mlm_head is False
    batch = _batch()
    with torch.no_grad():
        hidden = model.encode(**batch)
    torch.testing.assert_close(hidden, hf(**batch).last_hidden_state, atol=1e-5, rtol=0)


def test_convert_cli(hf_folder, tmp_path):
    folder, hf = hf_folder
    assert convert_main([folder, str(tmp_path / "sat-bert")]) == 0
    assert json.loads((tmp_path / "sat-bert" / "model_config.json").read_text())["model_class"] == "BertModel"
    model, _ = AutoModel.from_pretrained(str(tmp_path / "sat-bert"))
    with torch.no_grad():
        torch.testing.assert_close(model(**_batch())[0], hf(**_batch()).logits, atol=1e-5, rtol=0)
    with pytest.raises(SystemExit) as exit_info:  # existing destination: one sentence, exit code 2
        convert_main([folder, str(tmp_path / "sat-bert")])
    assert exit_info.value.code == 2


def test_hub_id_found_in_the_hf_cache_is_converted_under_home(hf_folder, tmp_path, monkeypatch):
    import huggingface_hub

    folder, hf = hf_folder
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns, local_files_only, etag_timeout):
        calls.append((repo_id, local_files_only))
        return folder  # what the HF cache would hold for this id

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    home = tmp_path / "home"
    model, _ = BertModel.from_pretrained("someorg/tiny-bert", home_path=str(home))
    assert calls == [("someorg/tiny-bert", True)]  # offline (conftest): the cache only, never the Hub
    assert (home / "someorg" / "tiny-bert" / "model_config.json").is_file()
    again, _ = AutoModel.from_pretrained("someorg/tiny-bert", home_path=str(home))
    assert len(calls) == 1  # the converted folder under home is found first
    with torch.no_grad():
        torch.testing.assert_close(again(**_batch())[0], hf(**_batch()).logits, atol=1e-5, rtol=0)
