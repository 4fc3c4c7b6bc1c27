"""model_config.json against its weights and the loading process (docs/checkpoints.md, "Loading and conversion
checks"): runtime keys are the caller's, absurd sizes are refused before building, naming the key."""
import os
import time

import pytest
import torch

from sat_accel.errors import CheckpointError
from sat_accel.model import AutoModel, BertModel
from sat_accel.training import checkpoint as ckpt

ARCH = dict(num_layers=2, hidden_size=32, num_attention_heads=4, vocab_size=50, max_sequence_length=16)


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    return BertModel(BertModel.get_args(**ARCH)).eval()


def _folder(bert, tmp_path, **config_changes):
    return ckpt.save_model_folder(str(tmp_path / "m"), bert.state_dict(), {**bert.get_model_config(),
                                                                          **config_changes})


def test_mode_and_dtype_in_model_config_are_the_callers(bert, tmp_path):
    folder = _folder(bert, tmp_path, mode="finetune", fp16=True, skip_init=True)
    model, args = BertModel.from_pretrained(folder)
    assert getattr(args, "mode", None) is None and not getattr(args, "fp16", False)
    assert not model.training and model.transformer.word_embeddings.weight.dtype == torch.float32
    assert torch.equal(model.transformer.word_embeddings.weight, bert.transformer.word_embeddings.weight)


@pytest.mark.parametrize("key,value", [("num_layers", 10**9), ("inner_hidden_size", 10**9),
                                       ("hidden_size_per_attention_head", 10**7), ("vocab_size", 10**12),
                                       ("hidden_size", 2**22)])
def test_absurd_sizes_are_refused_before_building_naming_the_key(bert, tmp_path, key, value):
    extra = {"num_attention_heads": 1} if key == "hidden_size" else {}
    folder = _folder(bert, tmp_path, **{key: value}, **extra)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=rf"model_config.json of .* sets {key}={value}, a model of at least "
                                              r"[\d,]+ parameters, but the checkpoint holds only [\d,]+ weights; fix "
                                              r"model_config.json .* nothing was built\."):
        AutoModel.from_pretrained(folder)
    assert time.perf_counter() - start < 60  # refused from the config, not after building a giant model


def test_a_config_that_fits_its_weights_is_not_refused(bert, tmp_path):
    model, _ = AutoModel.from_pretrained(_folder(bert, tmp_path))  # the floor never exceeds a real checkpoint
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in bert.parameters())


@pytest.mark.parametrize("old_format", [False, True])
def test_a_refused_pickle_names_file_and_global_and_what_to_do(bert, tmp_path, old_format):
    folder = tmp_path / "evil"
    (folder / "1").mkdir(parents=True)
    (folder / "latest").write_text("1")
    torch.save({"module": bert.state_dict(), "payload": os.system}, folder / "1" / "mp_rank_00_model_states.pt",
               _use_new_zipfile_serialization=not old_format)
    with pytest.raises(CheckpointError) as err:
        BertModel.from_pretrained(str(folder))
    assert str(err.value) == (
        f"Refused to load legacy checkpoint {folder}/1/mp_rank_00_model_states.pt: it would load the global "
        "posix.system, which safe loading refuses: a pickle that runs code — nothing from it ran; get a copy "
        "holding only tensors and plain data (e.g. safetensors) from a source you trust.")
