"""tests/test_deepspeed.py's training script with Accelerate's FSDP2 path forced onto CPU processes (gloo).

Accelerate selects FSDP only on GPUs, and sat_accel refuses `distributed_type: FSDP` without one. Everything
below that choice runs for real on CPU: torch's fully_shard (FSDP2) with Accelerate's preparation,
DTensor optimizer state, torch.distributed.checkpoint and the full-state-dict gather. So this script sets
the distributed type to FSDP after Accelerate chose MULTI_CPU, with a plugin built from
accelerate_configs/fsdp.yaml, and then runs the script unchanged. It is what lets CI test sat_accel's FSDP
code (sharded training state, consolidated weights, exact resume, the returned plain model);
scripts/gpu_check.sh runs the unpatched path on a GPU.
"""
import os
import runpy
import sys
from pathlib import Path

import yaml
from accelerate import state as accelerate_state
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

ROOT = Path(__file__).resolve().parents[2]
RENAMED = {"transformer_layer_cls_to_wrap": "transformer_cls_names_to_wrap", "offload_params": "cpu_offload"}


def plugin_from_yaml(path: Path) -> FullyShardedDataParallelPlugin:
    config = yaml.safe_load(path.read_text())["fsdp_config"]
    kwargs = {}
    for key, value in config.items():
        name = key if key == "fsdp_version" else key.removeprefix("fsdp_")
        kwargs[RENAMED.get(name, name)] = [value] if name == "transformer_layer_cls_to_wrap" else value
    kwargs["auto_wrap_policy"] = kwargs["auto_wrap_policy"].lower()
    return FullyShardedDataParallelPlugin(**kwargs)


def force_fsdp_on_cpu() -> None:
    original_init = accelerate_state.AcceleratorState.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU and getattr(self, "fsdp_plugin", None) is None:
            self.fsdp_plugin = plugin_from_yaml(ROOT / "accelerate_configs" / "fsdp.yaml")
            self.distributed_type = DistributedType.FSDP
            # AcceleratorState re-reads PartialState's shared values on later constructions: set it there too.
            accelerate_state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    accelerate_state.AcceleratorState.__init__ = init


if __name__ == "__main__":
    force_fsdp_on_cpu()
    script = str(ROOT / "tests" / "test_deepspeed.py")
    sys.argv[0] = script
    sys.path.insert(0, os.path.dirname(script))
    runpy.run_path(script, run_name="__main__")
