"""bench/gpu_check.sh --dry-run: the GPU check's every step on tiny models on the CPU, so it is known to work before a GPU is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_dry_run_measures_every_variant_and_resumes_a_killed_run_exactly(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["environment"]["cuda"] is False
    for section, variants in (("classification", {"lmtune", "hf_trainer"}),
                              ("sft", {"lmtune", "hf_trainer", "lmtune_gradient_checkpointing", "lmtune_fsdp2",
                                       "lmtune_deepspeed_zero3"})):
        rows = {r["variant"]: r for r in results[section]}
        for variant in variants:
            assert "error" not in rows[variant], rows[variant]
            assert rows[variant]["tokens_per_s"] > 0 and rows[variant]["final_loss"] is not None, rows[variant]
    sft = {r["variant"]: r for r in results["sft"]}
    # the Trainer is fed lmtune's own token rows and labels
    assert sft["hf_trainer"]["tokens"] == sft["lmtune"]["tokens"]
    # FSDP2 through accelerate launch, one process, trains the same steps to the same loss
    assert sft["lmtune_fsdp2"]["tokens"] == sft["lmtune"]["tokens"]
    assert abs(sft["lmtune_fsdp2"]["final_loss"] - sft["lmtune"]["final_loss"]) <= 2e-4, sft
    # and so does DeepSpeed ZeRO-3 (a test dependency: installed here)
    assert sft["lmtune_deepspeed_zero3"]["tokens"] == sft["lmtune"]["tokens"]
    assert abs(sft["lmtune_deepspeed_zero3"]["final_loss"] - sft["lmtune"]["final_loss"]) <= 2e-4, sft
    assert sft["lmtune_liger"]["skipped"] == "needs CUDA and liger-kernel"
    assert "error" not in sft["lmtune_qlora"] and "error" not in sft.get("trl_sft", {}), sft
    resume = results["resume"]
    assert resume["killed"] and resume["resumed_from_step"] > 0, resume
    assert resume["identical_losses"], resume  # on the CPU a resumed run is exact
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| sft | lmtune_gradient_checkpointing |" in table and "resume after SIGKILL" in table
