"""What an engine the launcher chose cannot do is refused before anything loads: exit 2, a message saying what to do, no run folder."""

from __future__ import annotations

import pytest

from conftest import make_config, train_refused


@pytest.mark.parametrize(("env", "config", "says"), [
    ({"FSDP_VERSION": "1", "ACCELERATE_USE_FSDP": "true"}, {}, "fsdp_version: 2"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, {"eval": {"generate": True}}, "eval.generate=false"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_OFFLOAD_PARAMS": "true"}, {}, "no GPU"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "WORLD_SIZE": "2"}, {}, "several processes without a GPU"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, {"eval": {"generate": True}}, "ZeRO-3"),
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, {"train": {"auto_batch_size": True}}, "train.auto_batch_size=false"),
])
def test_what_the_engine_cannot_do_is_refused_before_anything_loads(tiny_lms, identity_data, tmp_path, capsys, monkeypatch, env, config, says):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = make_config(tiny_lms["llama"], identity_data, tmp_path / "run", "causal_lm", **config)
    err = train_refused(cfg, tmp_path, capsys)
    assert says in err and "Traceback" not in err
