"""One folder per run: two runs with the same --experiment-name started in the same minute each claim their own
folder (atomically), never touching the other's files; a failed run leaves nothing behind."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from launch import command, launch_env
from sat_accel.checkpoint_format import resolve_load_dir
from sat_accel.errors import ConfigError
from sat_accel.training.run_folder import claim_run_name


def test_a_taken_name_gets_the_next_suffix(tmp_path):
    (tmp_path / "save" / "exp-01-02-03-04").mkdir(parents=True)
    roots = [str(tmp_path / "save"), str(tmp_path / "runs")]
    assert claim_run_name("exp-01-02-03-04", roots) == "exp-01-02-03-04-2"
    assert claim_run_name("exp-01-02-03-04", roots) == "exp-01-02-03-04-3"
    assert not (tmp_path / "runs" / "exp-01-02-03-04").exists()  # the failed attempt gave its folder back


def test_concurrent_claims_never_share_a_folder(tmp_path):
    names: list[str] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        names.append(claim_run_name("exp", [str(tmp_path / "a"), str(tmp_path / "b")]))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(names) == sorted(["exp"] + [f"exp-{n}" for n in range(2, 9)])


def test_a_save_path_under_a_file_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="writable --save"):
        claim_run_name("exp", [str(tmp_path / "file" / "ckpt")])


@pytest.mark.slow
def test_two_concurrent_runs_of_the_same_name_keep_their_own_checkpoints(tmp_path):
    if datetime.now().second >= 20:  # both runs must pick their name within the same minute
        time.sleep(61 - datetime.now().second)
    save = tmp_path / "ckpt"
    procs, outs = [], []
    for seed in (1, 2):
        out = tmp_path / f"out{seed}"
        out.mkdir()
        argv = ["--train-data", "tiny:64", "--split", "1", "--batch-size", "8", "--train-iters", str(4 + seed),
                "--save-interval", "2", "--num-workers", "0", "--seed", str(seed), "--save", str(save),
                "--model", "TinyModel", "--out", str(out)]
        procs.append(subprocess.Popen(command(1, "python") + argv, env=launch_env(), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
        outs.append(out)
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all((out / "DONE").exists() for out in outs), errors
    names = [(out / "DONE").read_text() for out in outs]
    assert sorted(os.listdir(save)) == sorted(names)
    assert min(names, key=len) + "-2" == max(names, key=len)  # the same name and minute: one got the suffix
    for out, name, iters in zip(outs, names, (5, 6)):
        iteration_dir = resolve_load_dir(str(save / name))
        assert iteration_dir.iteration == iters  # `latest` is this run's own
        saved = load_file(str(Path(iteration_dir.path) / "model.safetensors"))
        final = load_file(str(out / "final.safetensors"))
        assert all(torch.equal(saved[k], final[k]) for k in final)
        assert not [n for n in os.listdir(save / name) if n.startswith(".")]  # no stray temporary folders
