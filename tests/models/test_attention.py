"""model.attn_implementation: the kernel asked for is the one the model runs, and one this machine lacks is refused."""

from __future__ import annotations

import pytest
import torch
import yaml

import lmtune
from conftest import make_config
from lmtune.cli import main
from lmtune.errors import ModelError


def config(tiny_lms, identity_data, out, kernel: str) -> dict:
    return make_config(tiny_lms["llama"], identity_data, out, "causal_lm", model={"max_length": 64, "attn_implementation": kernel},
                       train={"epochs": 1, "batch_size": 8, "learning_rate": 1e-2, "save_every_n_steps": 1000},
                       eval={"generate": False})


def test_eager_and_sdpa_run_as_asked_and_train_alike(tiny_lms, identity_data, tmp_path):
    from lmtune.config import build_config
    from lmtune.train.setup import load_model

    losses = {}
    for kernel in ("eager", "sdpa"):
        cfg = config(tiny_lms, identity_data, tmp_path / kernel, kernel)
        _, _, model = load_model(build_config(cfg))
        assert model.config._attn_implementation == kernel
        losses[kernel] = lmtune.train(cfg, progress=False).metrics["loss"]
    torch.testing.assert_close(losses["eager"], losses["sdpa"], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine may have flash-attn")
def test_flash_attention_without_a_gpu_is_refused_before_anything_is_written(tiny_lms, identity_data, tmp_path, capsys):
    cfg = config(tiny_lms, identity_data, tmp_path / "run", "flash_attention_2")
    with pytest.raises(ModelError, match="flash_attention_2 needs a CUDA GPU"):
        lmtune.train(cfg, progress=False)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(config_file), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "use sdpa" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()
