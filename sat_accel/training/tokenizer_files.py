"""The checkpoint carries its tokenizer, so model_config.json's ``tokenizer_type`` is portable.

A local tokenizer (``--tokenizer-type`` naming a folder or a vocabulary file on this machine) is written into
every iteration folder as ``tokenizer/`` and recorded relative (``"tokenizer"`` or ``"tokenizer/vocab.txt"``);
``from_pretrained`` resolves it back to that folder. A hub name (``bert-base-uncased``) is recorded as given;
SAT's placeholder ``fake`` (no tokenizer) is not recorded.
"""
from __future__ import annotations

import argparse
import os
import shutil
from typing import Any

from ..checkpoint_format import TOKENIZER_DIR


def tokenizer_entry(args: argparse.Namespace | None) -> dict[str, Any]:
    """The ``tokenizer_type`` item model_config.json records for ``args`` ({} when there is none)."""
    value = getattr(args, "tokenizer_type", None)
    if not isinstance(value, str) or value in ("", "fake"):
        return {}
    path = os.path.expanduser(value)
    if os.path.isdir(path):
        return {"tokenizer_type": TOKENIZER_DIR}
    if os.path.isfile(path):
        return {"tokenizer_type": f"{TOKENIZER_DIR}/{os.path.basename(path)}"}
    return {"tokenizer_type": value}


def write_tokenizer(folder: str, args: argparse.Namespace | None) -> None:
    """Copy a local tokenizer into ``<folder>/tokenizer/`` (tokenizer files only, not a model's weights)."""
    value = getattr(args, "tokenizer_type", None)
    if not tokenizer_entry(args).get("tokenizer_type", "").startswith(TOKENIZER_DIR):
        return
    path, target = os.path.expanduser(value), os.path.join(folder, TOKENIZER_DIR)
    os.makedirs(target, exist_ok=True)
    if os.path.isfile(path):
        shutil.copy2(path, target)
        return
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(path).save_pretrained(target)
