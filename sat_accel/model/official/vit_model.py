"""ViT in SAT's layout: patch embedding + [CLS] from the word table, pre-LN encoder, classifier on token 0.

    logits, *_ = model(torch.zeros(b, 1, dtype=torch.long), None, None, image=pixels)   # [b, num_classes]

Mixins: 'patch_embedding' (``word_embedding_forward``: [CLS] = ``word_embeddings(input_ids[:, :pre_len])``,
then the ``Conv2d`` patches), 'pos_embedding' (``position_embedding_forward``: the whole table; the
image size is fixed) and 'cls' (``final_forward`` on token 0; with ``num_classes=0`` the model returns
the final hidden states instead).
"""
from __future__ import annotations

import argparse
from typing import Optional

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ..base_model import BaseModel
from ..initialization import DEFAULT_INITIALIZER_RANGE
from ..mixin_base import BaseMixin, RuleInitMixin
from ..transformer import BaseTransformer


def _grid(args: argparse.Namespace) -> tuple[int, int]:
    size = args.image_size if isinstance(args.image_size, (list, tuple)) else [args.image_size] * 2
    if len(size) != 2 or any(s % args.patch_size for s in size):
        raise ConfigError(f"image_size {args.image_size} must be [height, width] divisible by patch_size "
                          f"{args.patch_size}.")
    return size[0] // args.patch_size, size[1] // args.patch_size


class ImagePatchEmbeddingMixin(BaseMixin):
    """``image`` ``[b, C, H, W]`` -> ``[b, pre_len + patches + post_len, h]`` token embeddings."""

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int, pre_len: int, post_len: int,
                 dtype: torch.dtype = torch.float32, init_std: float = DEFAULT_INITIALIZER_RANGE):
        super().__init__()
        self.pre_len, self.post_len, self.init_std = pre_len, post_len, init_std
        self.proj = torch.nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, dtype=dtype)
        self.reinit()

    @torch.no_grad()
    def reinit(self, parent_model: Optional[torch.nn.Module] = None) -> None:
        """transformers' ViT: truncated N(0, initializer_range) kernel, zero bias."""
        torch.nn.init.trunc_normal_(self.proj.weight, 0.0, getattr(parent_model, "initializer_range", self.init_std))
        torch.nn.init.zeros_(self.proj.bias)

    def word_embedding_forward(self, input_ids: torch.Tensor, **kw) -> torch.Tensor:
        image = kw.get("image")
        if image is None:
            raise ConfigError("ViTModel needs image=<[b, channels, height, width] tensor> in its forward call.")
        patches = self.proj(image.to(self.proj.weight.dtype)).flatten(2).transpose(1, 2)  # [b, patches, h]
        table = self.transformer.word_embeddings
        pre = table(input_ids[:, :self.pre_len]).expand(patches.shape[0], -1, -1)
        post = table(input_ids[:, self.pre_len:self.pre_len + self.post_len]).expand(patches.shape[0], -1, -1)
        return torch.cat((pre, patches, post), dim=1)


class InterpolatedPositionEmbeddingMixin(BaseMixin):
    """Adds the whole position table (``position_ids`` are ignored: one row per token of the image)."""

    def position_embedding_forward(self, position_ids: torch.Tensor, **kw) -> torch.Tensor:
        return self.transformer.position_embeddings.weight.unsqueeze(0)


class ClsMixin(RuleInitMixin):
    """Linear classifier on the first token: ``[b, s, h] -> [b, num_classes]``."""

    def __init__(self, hidden_size: int, num_classes: int, dtype: torch.dtype = torch.float32,
                 init_std: float = DEFAULT_INITIALIZER_RANGE):
        super().__init__(init_std)
        self.classifier = torch.nn.Linear(hidden_size, num_classes, dtype=dtype)
        self.init_submodules_(init_std)

    def final_forward(self, logits: torch.Tensor, **kw) -> torch.Tensor:
        return self.classifier(logits[:, 0])


class HiddenStatesMixin(BaseMixin):
    """Headless ViT: ``final_forward`` returns the final hidden states ``[b, s, h]``."""

    def final_forward(self, logits: torch.Tensor, **kw) -> torch.Tensor:
        return logits


class ViTModel(BaseModel):
    """SAT's ViT: exact-GELU pre-LN encoder over [CLS] + image patches; initialised as transformers' ViT
    (N(0, 0.02) weights, unscaled output projections, zero biases, unit layernorms)."""

    scale_output_init = False

    ARCH_DEFAULT_OVERRIDES = {"vocab_size": 1, "layernorm_epsilon": 1e-12, "hidden_dropout": 0.0,
                              "attention_dropout": 0.0}

    def __init__(self, args: argparse.Namespace, transformer: Optional[BaseTransformer] = None,
                 params_dtype: torch.dtype = torch.float32, **kwargs):
        grid = _grid(args)
        pre_len, post_len = args.pre_len, args.post_len
        kwargs.setdefault("activation_func", F.gelu)
        kwargs["max_sequence_length"] = pre_len + grid[0] * grid[1] + post_len
        super().__init__(args, transformer=transformer, params_dtype=params_dtype, **kwargs)
        h = self.transformer.hidden_size
        self.add_mixin("patch_embedding", ImagePatchEmbeddingMixin(args.in_channels, h, args.patch_size, pre_len,
                                                                   post_len, params_dtype, self.initializer_range))
        self.add_mixin("pos_embedding", InterpolatedPositionEmbeddingMixin())
        if args.num_classes:
            self.add_mixin("cls", ClsMixin(h, args.num_classes, params_dtype, self.initializer_range))
        else:
            self.add_mixin("hidden", HiddenStatesMixin())

    @classmethod
    def add_model_specific_args(cls, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Image geometry, [CLS]/extra token counts and the number of classes (SAT's flags)."""
        group = parser.add_argument_group("ViT", "ViT configuration")
        group.add_argument("--image-size", nargs="+", type=int, default=[224, 224], help="height width in pixels")
        group.add_argument("--pre-len", type=int, default=1, help="tokens before the patches ([CLS])")
        group.add_argument("--post-len", type=int, default=0, help="tokens after the patches")
        group.add_argument("--in-channels", type=int, default=3, help="image channels")
        group.add_argument("--num-classes", type=int, default=21843, help="classifier outputs (0 = headless)")
        group.add_argument("--patch-size", type=int, default=16, help="patch side in pixels")
        return super().add_model_specific_args(parser)
