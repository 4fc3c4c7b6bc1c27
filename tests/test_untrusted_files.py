"""Bad files from strangers or from a damaged disk (issue 11, items 4, 6, 7): each is refused with one
sentence naming the file (or value) and what to do, never a raw exception and never a read outside the
checkpoint folder. Tiny models, real safetensors/torch files."""
import argparse
import json
import os

import pytest
import torch
from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import save_file

from sat_accel import checkpoint_format, get_args
from sat_accel.checkpoint_format import read_weights, save_model_folder
from sat_accel.errors import CheckpointError, ConfigError
from sat_accel.model import BertModel
from sat_accel.training import checkpoint as ckpt

ARCH = dict(num_layers=1, hidden_size=8, num_attention_heads=2, vocab_size=20, max_sequence_length=8)


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


@pytest.fixture
def bert_folder(tmp_path):
    torch.manual_seed(0)
    model = BertModel(BertModel.get_args(**ARCH))
    return save_model_folder(str(tmp_path / "bert"), model.state_dict(), model.get_model_config())


def _run(tmp_path, accelerator):
    """A training checkpoint of a tiny Linear at iteration 1 -> (run folder, model, optimizer)."""
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    args = argparse.Namespace(no_save_optim=False, save_total_limit=None, max_shard_size="5GB")
    ckpt.save_checkpoint(accelerator, str(tmp_path / "run"), 1, model, opt, None, {"iteration": 1}, args)
    return str(tmp_path / "run"), model, opt


def _state_file(run, name):
    return os.path.join(run, "1", "training_state", name)


# ---------------------------------------------------------------- item 4: paths that leave their root
@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", 7])
def test_an_index_cannot_name_a_shard_outside_its_folder(tmp_path, shard):
    folder = tmp_path / "it"
    folder.mkdir()
    save_file({"w": torch.ones(2)}, str(tmp_path / "outside.safetensors"))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": shard}}))
    with pytest.raises(CheckpointError, match=f"names the file {shard!r}, which is not inside"):
        read_weights(str(folder))


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs-run", ""])
def test_an_experiment_name_cannot_leave_save(name):
    with pytest.raises(ConfigError, match=f"--experiment-name {name!r} must be a name inside --save"):
        get_args(["--experiment-name", name])


@pytest.mark.parametrize("value", ["../../../etc", "/etc/passwd"])
def test_path_keys_of_model_config_stay_in_the_checkpoint(bert_folder, value):
    config_path = os.path.join(bert_folder, "model_config.json")
    config = json.load(open(config_path))
    json.dump({**config, "tokenizer_path": value}, open(config_path, "w"))
    with pytest.raises(CheckpointError, match=f"tokenizer_path={value!r}, a path outside the checkpoint folder"):
        BertModel.from_pretrained(bert_folder)
    _, args = BertModel.from_pretrained(bert_folder, overwrite_args={"tokenizer_path": value})  # trusted by caller
    assert args.tokenizer_path == value


# ---------------------------------------------------------------- item 6: one sentence instead of a raw error
@pytest.mark.parametrize("failure", [
    (torch, "save", RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")),
    (checkpoint_format, "save_file", SafetensorError("Error while serializing: I/O error: No space left on device"))])
def test_a_full_disk_during_a_save_is_one_sentence_and_keeps_the_previous_checkpoint(tmp_path, accelerator,
                                                                                      monkeypatch, failure):
    run, model, opt = _run(tmp_path, accelerator)
    module, name, error = failure

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(module, name, fail)
    args = argparse.Namespace(no_save_optim=False, save_total_limit=None, max_shard_size="5GB")
    with pytest.raises(CheckpointError, match=r"Saving checkpoint 2 .* failed while writing .*a full disk\?.*"
                                              r"free disk space .* previous checkpoint is untouched"):
        ckpt.save_checkpoint(accelerator, run, 2, model, opt, None, {"iteration": 2}, args)
    monkeypatch.undo()
    assert open(os.path.join(run, "latest")).read() == "1" and sorted(os.listdir(run)) == [
        "1", "latest", "model_config.json"]


@pytest.mark.parametrize("content,message", [
    (None, "Trainer state .* is missing"),
    ("{not json", "Trainer state .* is not valid JSON"),
    ("[1, 2]", "Trainer state .* is not an object with an integer 'iteration'"),
    ('{"iteration": "six"}', "Trainer state .* is not an object with an integer 'iteration'")])
def test_a_damaged_trainer_state_is_named(tmp_path, accelerator, content, message):
    run, model, opt = _run(tmp_path, accelerator)
    path = _state_file(run, "trainer_state.json")
    os.remove(path) if content is None else open(path, "w").write(content)
    with pytest.raises(CheckpointError, match=message + ".*--load-iteration"):
        ckpt.load_training_state(accelerator, os.path.join(run, "1"), opt, None)


def test_an_rng_file_of_the_wrong_shape_is_named(tmp_path, accelerator):
    run, model, opt = _run(tmp_path, accelerator)
    torch.save({"python": "not a state"}, _state_file(run, "rng_state_0.pth"))
    with pytest.raises(CheckpointError, match="RNG state .*rng_state_0.pth does not hold the random states"):
        ckpt.load_training_state(accelerator, os.path.join(run, "1"), opt, None)


def test_a_corrupt_optimizer_file_is_called_corrupt_not_a_mismatch(tmp_path, accelerator):
    run, model, opt = _run(tmp_path, accelerator)
    path = _state_file(run, "optimizer.pt")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])  # truncated zip
    with pytest.raises(CheckpointError, match="Cannot read Training-state file .*optimizer.pt safely") as info:
        ckpt.load_training_state(accelerator, os.path.join(run, "1"), opt, None)
    assert "does not fit" not in str(info.value)


def test_damaged_tied_weights_metadata_is_named(tmp_path):
    path = str(tmp_path / "model.safetensors")
    save_file({"w": torch.ones(2)}, path, metadata={"format": "pt", "sat_accel.tied": "{oops"})
    with pytest.raises(CheckpointError, match="model.safetensors has damaged 'sat_accel.tied' metadata"):
        read_weights(str(tmp_path))


def test_a_model_config_that_is_a_json_list_is_named(bert_folder):
    json.dump([1, 2], open(os.path.join(bert_folder, "model_config.json"), "w"))
    with pytest.raises(CheckpointError, match="model_config.json holds a JSON list, not an object"):
        BertModel.from_pretrained(bert_folder)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_integer_weights_for_float_parameters_are_refused(tmp_path, dtype):
    torch.manual_seed(0)
    model = BertModel(BertModel.get_args(**ARCH))
    state = {k: v.to(dtype) if k.endswith("dense.weight") else v for k, v in model.state_dict().items()}
    folder = save_model_folder(str(tmp_path / "bert-int"), state, model.get_model_config())
    with pytest.raises(CheckpointError, match=f"dense.weight: checkpoint {dtype} vs model torch.float32"):
        BertModel.from_pretrained(folder)


def test_an_hf_config_that_is_not_json_is_named(tmp_path):
    from sat_accel.convert.hf_folder import convert_hf_folder

    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text("{'model_type': 'bert'")  # python, not JSON
    save_file({"w": torch.ones(2)}, str(src / "model.safetensors"))
    with pytest.raises(CheckpointError, match="Hugging Face config .*config.json is not valid JSON"):
        convert_hf_folder(str(src), str(tmp_path / "out"))


# ---------------------------------------------------------------- item 7: loading and conversion gaps
def test_a_legacy_pt_in_torchs_old_format_loads(tmp_path, bert_folder):
    state, _ = read_weights(os.path.join(bert_folder, "release"))
    legacy = tmp_path / "sat" / "1"
    legacy.mkdir(parents=True)
    torch.save({"module": {k: v.clone() for k, v in state.items()}}, legacy / "mp_rank_00_model_states.pt",
               _use_new_zipfile_serialization=False)
    (tmp_path / "sat" / "latest").write_text("1")
    json.dump(json.load(open(os.path.join(bert_folder, "model_config.json"))),
              open(tmp_path / "sat" / "model_config.json", "w"))
    model, _ = BertModel.from_pretrained(str(tmp_path / "sat"))
    assert torch.equal(model.state_dict()["transformer.word_embeddings.weight"],
                       state["transformer.word_embeddings.weight"])


def test_a_pickle_payload_is_refused_naming_the_global(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    folder = tmp_path / "evil" / "1"
    folder.mkdir(parents=True)
    torch.save({"module": Payload()}, folder / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match=r"would load the global (posix|os)\.system, which safe loading "
                                              r"refuses: a pickle that runs code"):
        read_weights(str(folder))
    assert not os.path.exists("pwned")


def test_from_pretrained_accepts_the_documented_size_option(tmp_path, bert_folder):
    import shutil
    import tarfile

    with tarfile.open(tmp_path / "m.tar", "w") as tf:
        tf.add(bert_folder, arcname="bert")
    size = os.path.getsize(tmp_path / "m.tar")
    shutil.rmtree(bert_folder)
    home = str(tmp_path / "home")
    with pytest.raises(CheckpointError, match=f"bytes instead of {size + 1}"):
        BertModel.from_pretrained("bert", home_path=home, url=f"file://{tmp_path}/m.tar", size=size + 1)
    model, _ = BertModel.from_pretrained("bert", home_path=home, url=f"file://{tmp_path}/m.tar", size=size)
    assert isinstance(model, BertModel)


def test_runtime_keys_of_model_config_are_ignored(bert_folder):
    config_path = os.path.join(bert_folder, "model_config.json")
    json.dump({**json.load(open(config_path)), "device": "cuda:7"}, open(config_path, "w"))
    model, args = BertModel.from_pretrained(bert_folder)
    assert next(model.parameters()).device.type == "cpu" and getattr(args, "device", None) != "cuda:7"


@pytest.mark.parametrize("key,value,message", [
    ("num_layers", 10**6, "sets num_layers=1000000, a model of at least .* parameters, but the checkpoint holds"),
    ("num_layers", 1e9, "sets num_layers=1000000000.0; it must be a non-negative integer"),
    ("hidden_size", -8, "sets hidden_size=-8; it must be a non-negative integer")])
def test_absurd_sizes_in_model_config_are_refused_fast(bert_folder, key, value, message):
    config_path = os.path.join(bert_folder, "model_config.json")
    json.dump({**json.load(open(config_path)), key: value}, open(config_path, "w"))
    with pytest.raises(CheckpointError, match=message):
        BertModel.from_pretrained(bert_folder)


def _hf_bert(tmp_path, **overrides):
    import transformers

    config = transformers.BertConfig(hidden_size=8, num_attention_heads=2, num_hidden_layers=2,
                                     intermediate_size=16, max_position_embeddings=8, vocab_size=20)
    folder = tmp_path / "hf"
    transformers.BertModel(config).save_pretrained(folder)
    if overrides:
        config_path = folder / "config.json"
        json.dump({**json.load(open(config_path)), **overrides}, open(config_path, "w"))
    return str(folder)


def test_an_hf_config_that_disagrees_with_the_weights_writes_nothing(tmp_path):
    from sat_accel.convert.hf_folder import convert_hf_folder

    src = _hf_bert(tmp_path, vocab_size=30)
    with pytest.raises(CheckpointError, match=r"config.json does not match its weights: transformer.word_embeddings"
                                              r".weight has shape \(20, 8\) but vocab_size=30 implies \(30, 8\)"):
        convert_hf_folder(src, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_converted_copy_is_redone_when_the_source_config_changes(tmp_path):
    src = _hf_bert(tmp_path)
    home = str(tmp_path / "home")
    _, first = BertModel.from_pretrained(src, home_path=home)
    config_path = os.path.join(src, "config.json")
    json.dump({**json.load(open(config_path)), "layer_norm_eps": 1e-5}, open(config_path, "w"))
    weights = os.path.join(src, "model.safetensors")
    os.utime(weights, ns=(0, os.stat(weights).st_mtime_ns))  # the weights file looks untouched
    _, second = BertModel.from_pretrained(src, home_path=home)
    assert (first.layernorm_epsilon, second.layernorm_epsilon) == (1e-12, 1e-5)
    assert len(os.listdir(os.path.join(home, "converted"))) == 4  # two copies, two locks
