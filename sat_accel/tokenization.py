"""SAT's `get_tokenizer`: one process-wide tokenizer, chosen by `args.tokenizer_type`.

    get_tokenizer(args)                 # first call: load AutoTokenizer(args.tokenizer_type) and keep it
    tokenizer = get_tokenizer()         # later calls anywhere in the process: the same object
    get_tokenizer(outer_tokenizer=tok)  # use your own tokenizer object instead

`tokenizer_type` is a transformers name or a folder; a model folder converted from Hugging Face records
its own tokenizer folder there, so `from_pretrained(...)` followed by `get_tokenizer(args)` gives the
tokenizer that belongs to the weights. SAT's own tokenizers (icetk, cogview, glm) are not provided.
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, Optional

from .errors import ConfigError

logger = logging.getLogger(__name__)

_SAT_ONLY = ("cogview", "glm_", "icetk")
_cache: dict[str, Any] = {}


def get_tokenizer(args: Optional[argparse.Namespace] = None, outer_tokenizer: Any = None, *,
                  tokenizer_type: Optional[str] = None) -> Any:
    """The process-wide tokenizer: set by `outer_tokenizer`, or loaded from `tokenizer_type` / `args`.

    Without arguments it returns the tokenizer set earlier; asking for a different type replaces it."""
    if outer_tokenizer is not None:
        _cache.update(tokenizer=outer_tokenizer, type="outer")
        return outer_tokenizer
    wanted = tokenizer_type or getattr(args, "tokenizer_type", None)
    if wanted is None or (wanted == "fake" and "tokenizer" in _cache):
        if "tokenizer" not in _cache:
            raise ConfigError("get_tokenizer() has no tokenizer yet; call get_tokenizer(args) with "
                              "--tokenizer-type NAME_OR_FOLDER first (from_pretrained sets it for converted models).")
        return _cache["tokenizer"]
    if _cache.get("type") != wanted:
        _cache.update(tokenizer=_load(str(wanted)), type=wanted)
    return _cache["tokenizer"]


def _load(tokenizer_type: str) -> Any:
    if tokenizer_type == "fake":
        raise ConfigError("--tokenizer-type is 'fake' (SAT's default, no tokenizer); pass a transformers name "
                          "or folder, e.g. --tokenizer-type bert-base-uncased.")
    if tokenizer_type.startswith(_SAT_ONLY):
        raise ConfigError(f"tokenizer {tokenizer_type!r} is one of SAT's own (icetk/cogview/glm), which are not "
                          "provided; pass a transformers tokenizer name or folder instead.")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_type)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load tokenizer {tokenizer_type!r} ({str(e).splitlines()[0][:200]}); pass a "
                          "local folder with tokenizer files or a transformers name available offline.") from e
    logger.info("get_tokenizer: loaded %s from %s", type(tokenizer).__name__, tokenizer_type)
    return tokenizer
