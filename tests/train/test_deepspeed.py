"""DeepSpeed ZeRO-2 and ZeRO-3 through `accelerate launch` with examples/accelerate/deepspeed-zero{2,3}.yaml.

On this machine DeepSpeed runs one CPU process (Accelerate counts several DeepSpeed processes
without GPUs as one, so lmtune refuses them): its engine still takes every update, partitions
the optimizer state (and, under ZeRO-3, every parameter), and its checkpoint files are the
ones a multi-GPU run writes, one optimizer partition per process. The run matches the same run
without DeepSpeed (losses and weights within 1e-5; measured to 3e-6), and resumes exactly.
The configs in examples/accelerate are also checked by DeepSpeed's own config parser.
"""

from __future__ import annotations

import json

import pytest
import torch
from launching import ROOT, TOLERANCE, assert_close, copy_from_checkpoint, launch, losses
from safetensors.torch import load_file

from conftest import make_config

TRAIN = {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "log_every_n_steps": 1, "save_every_n_steps": 10,
         "keep_last_checkpoints": 100, "gradient_accumulation_steps": 2}


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_trains_as_without_it_and_resumes_exactly(tiny_models, toy_data, tmp_path, stage):
    from lmtune.train.loop import train

    method = {"name": "lora", "lora_rank": 4, "lora_dropout": 0.0} if stage == 3 else {"name": "full"}
    cfg = make_config(tiny_models["llama"], toy_data, tmp_path / "zero", method=method, train=TRAIN)
    launch(cfg, tmp_path, f"deepspeed-zero{stage}.yaml", processes=1)
    run = tmp_path / "zero"
    train(make_config(tiny_models["llama"], toy_data, tmp_path / "plain", method=method, train=TRAIN), progress=False)
    a, b = losses(run), losses(tmp_path / "plain")
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 31))  # 15 steps of 2 micro-batches an epoch
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) < TOLERANCE
    weights = "adapter_model.safetensors" if stage == 3 else "model.safetensors"
    for folder in ("best", "final"):  # whole models (gathered from the partitions under ZeRO-3)
        assert_close(load_file(run / folder / weights), load_file(tmp_path / "plain" / folder / weights))
    manifest = json.loads((run / "checkpoints/step-20/manifest.json").read_text())
    assert manifest["layout"] == "zero" and "optimizer-0.pt" in manifest["files"]

    # Resume a copy from step 20 (mid-epoch): the same losses and final weights, bit for bit.
    resumed = copy_from_checkpoint(run, 20, tmp_path / "resumed")
    launch({**cfg, "output": {"dir": str(resumed)}}, tmp_path, f"deepspeed-zero{stage}.yaml", "--resume", processes=1)
    assert losses(resumed) == losses(run)
    x, y = load_file(run / "final" / weights), load_file(resumed / "final" / weights)
    assert all(torch.equal(x[n], y[n]) for n in x)


def test_an_optimizer_partition_that_would_run_code_is_refused(tmp_path):
    """DeepSpeed's partitions load with weights_only=True allowing its own state classes only."""
    import pickle

    from conftest import PicklePayload
    from lmtune.errors import CheckpointError
    from lmtune.train import zero

    marker = tmp_path / "pwned"
    with zero.partition_file(tmp_path, 0).open("wb") as f:
        pickle.dump({"loss_scaler": PicklePayload(str(marker))}, f)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        zero.load_partition(tmp_path, object(), 0, 1)
    assert not marker.exists()


@pytest.mark.parametrize("stage", [2, 3])
def test_the_example_configs_pass_deepspeeds_own_parser(stage, monkeypatch):
    """What accelerate launch makes of examples/accelerate/deepspeed-zero{2,3}.yaml, after lmtune fills it, is a valid DeepSpeed config."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin
    from deepspeed.runtime.config import DeepSpeedConfig

    launch_config = load_config_from_file(str(ROOT / f"examples/accelerate/deepspeed-zero{stage}.yaml"))
    assert launch_config.distributed_type == "DEEPSPEED" and launch_config.deepspeed_config["zero_stage"] == stage
    ds = launch_config.deepspeed_config
    for key, env in (("zero_stage", "ACCELERATE_DEEPSPEED_ZERO_STAGE"), ("offload_optimizer_device", "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE"),
                     ("offload_param_device", "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"), ("zero3_init_flag", "ACCELERATE_DEEPSPEED_ZERO3_INIT"),
                     ("zero3_save_16bit_model", "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL")):
        if key in ds:
            monkeypatch.setenv(env, str(ds[key]).lower())
    config = DeepSpeedPlugin().deepspeed_config
    # what lmtune sets (train/zero.py configure) for batch 8 and gradient clipping 1.0, in one process
    config.update({"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 1, "train_batch_size": 8,
                   "gradient_clipping": 1.0})
    config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    assert '"auto"' not in json.dumps(config)  # nothing left for Accelerate to fill
    parsed = DeepSpeedConfig(config)
    assert parsed.zero_optimization_stage == stage
    assert parsed.train_micro_batch_size_per_gpu == 8 and parsed.gradient_clipping == 1.0
