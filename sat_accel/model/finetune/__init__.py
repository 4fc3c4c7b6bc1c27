"""SAT's finetune mixins (`sat.model.finetune`): classification head, prefix tuning, LoRA, adapters, FFADD,
and saving/loading only their weights (state.py). docs/models.md shows each one in use."""
from .adapter import AdapterMixin
from .ffadd import FFADDMixin
from .lora import LoraLinear, LoRAMixin, LoraMixin
from .mlp_head import MLPHeadMixin
from .prompt_tuning import PrefixTuningMixin, PTuningV2Mixin
from .state import load_mixin_state_dict, mixin_state_dict

__all__ = ["MLPHeadMixin", "PrefixTuningMixin", "PTuningV2Mixin", "LoraMixin", "LoraLinear", "LoRAMixin",
           "AdapterMixin", "FFADDMixin", "mixin_state_dict", "load_mixin_state_dict"]
