"""Hugging Face (transformers) model folders: recognise one, read its weights, convert it to sat_accel.

The architecture-specific key and config mapping lives next to this module (dispatch.py picks the family by
config.json's model_type: hf_bert.py, hf_gpt2.py, hf_llama.py); this module only knows the folder layout of
transformers and writes the result with the checkpoint format's writer.
"""
from __future__ import annotations

import hashlib
import os
import re

import torch

from ..checkpoint_format import (HF_CONFIG, LATEST, MODEL_CONFIG, TOKENIZER_DIR, WEIGHTS, WEIGHTS_INDEX, read_json,
                                 read_safetensors, read_safetensors_index, safe_torch_load, save_model_folder)
from ..errors import CheckpointError
from .dispatch import family_of, hf_to_sat_checkpoint

HF_PICKLE_WEIGHTS = "pytorch_model.bin"
HF_WEIGHT_FILES = (WEIGHTS, WEIGHTS_INDEX, HF_PICKLE_WEIGHTS)
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                      "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model")


def is_hf_folder(path: str) -> bool:
    """A transformers-format folder (config.json + weights) rather than a sat_accel/SAT checkpoint."""
    if os.path.isfile(os.path.join(path, MODEL_CONFIG)) or os.path.isfile(os.path.join(path, LATEST)):
        return False
    return os.path.isfile(os.path.join(path, HF_CONFIG)) and any(
        os.path.isfile(os.path.join(path, w)) for w in HF_WEIGHT_FILES)


def hf_weights_file(folder: str) -> str:
    """The file whose size and date identify the weights of a transformers folder."""
    return next(os.path.join(folder, w) for w in HF_WEIGHT_FILES if os.path.isfile(os.path.join(folder, w)))


def read_hf_weights(folder: str) -> dict[str, torch.Tensor]:
    """State dict of a transformers folder: safetensors (single or sharded) or pytorch_model.bin."""
    if os.path.isfile(os.path.join(folder, WEIGHTS_INDEX)):
        return read_safetensors_index(folder)[0]
    if os.path.isfile(os.path.join(folder, WEIGHTS)):
        return read_safetensors(os.path.join(folder, WEIGHTS))[0]
    return safe_torch_load(os.path.join(folder, HF_PICKLE_WEIGHTS), what="Hugging Face weights",
                           advice="convert it to model.safetensors with transformers and retry.")


def convert_hf_folder(src: str, dst: str, max_shard_size: int | str = "5GB") -> str:
    """Write a sat_accel checkpoint folder at `dst` from a Hugging Face folder `src` (family by model_type)."""
    hf_config = read_json(os.path.join(src, HF_CONFIG), "Hugging Face config",
                          "restore the folder's config.json from where the model came from.")
    if not isinstance(hf_config, dict):
        raise CheckpointError(f"{src}/{HF_CONFIG} holds a JSON {type(hf_config).__name__}, not a config object; "
                              "restore the folder's config.json from where the model came from.")
    family_of(hf_config)  # an unsupported model_type fails before the weights are read
    config, state = hf_to_sat_checkpoint(hf_config, read_hf_weights(src))
    check_shapes_fit_config(config, state, src)  # before writing: a folder that cannot load is never made
    tokenizer = {os.path.join(TOKENIZER_DIR, name): os.path.join(src, name) for name in HF_TOKENIZER_FILES
                 if os.path.isfile(os.path.join(src, name))}
    if tokenizer:  # portable: from_pretrained resolves it inside the folder (loading.resolve_tokenizer_type)
        config = {**config, "tokenizer_type": TOKENIZER_DIR}
    return save_model_folder(dst, state, config, max_shard_size, extra_files=tokenizer)


def check_shapes_fit_config(config: dict, state: dict[str, torch.Tensor], src: str) -> None:
    """The converted weights have the sizes config.json declares: layer count, embedding and attention shapes."""
    hidden, vocab, layers = config.get("hidden_size"), config.get("vocab_size"), config.get("num_layers")
    expected = {"transformer.word_embeddings.weight": (vocab, hidden)}
    expected.update({f"transformer.layers.{i}.attention.dense.weight": (hidden, hidden) for i in range(layers or 0)})
    problems = [f"{key} is {tuple(state[key].shape)}, config.json implies {shape}"
                for key, shape in expected.items() if key in state and tuple(state[key].shape) != shape]
    found = {int(m.group(1)) for key in state if (m := re.match(r"transformer\.layers\.(\d+)\.", key))}
    if layers is not None and found and len(found) != layers:
        problems.append(f"the weights have {len(found)} layers, config.json says {layers}")
    if problems:
        raise CheckpointError(f"{src}: config.json does not match the weights ({'; '.join(problems[:5])}); use the "
                              "config.json that came with these weights.")


def source_fingerprint(folder: str) -> str:
    """Identifies a transformers folder's content: config.json and weight index bytes, weight file size/date."""
    digest = hashlib.sha256()
    for name in (HF_CONFIG, WEIGHTS_INDEX):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    stat = os.stat(hf_weights_file(folder))
    digest.update(f"{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]
