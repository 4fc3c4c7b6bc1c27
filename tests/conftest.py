"""Test-wide settings: never touch the network, and run torch with a fixed thread count so that
repeated runs and multi-process runs are comparable bit for bit."""
import os

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import logging  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def sat_log(caplog):
    """caplog that also sees sat_accel's logger (training_main stops it propagating to the root logger)."""
    logger = logging.getLogger("sat_accel")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="sat_accel")
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.fixture(autouse=True)
def fresh_sat_accel_logger():
    """Every test starts with sat_accel's logger as a new process has it: training_main configures it once per
    process (own handler, no propagation), which would otherwise hide later tests' records from caplog."""
    yield
    logger = logging.getLogger("sat_accel")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
