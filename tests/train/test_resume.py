"""A run is never lost: exact resume, atomic checkpoints, graceful stop, bad numbers, full disks.

The reference for every resume test is the same run never interrupted; "equal" means the same
per-step losses (float ==) and bit-identical final weights (torch.equal).
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import lmtune
from conftest import PicklePayload, make_config
from lmtune.errors import CheckpointError, ConfigError, TrainingError
from lmtune.run_dir import RunDir
from lmtune.train import checkpoint as ckpt

loop = importlib.import_module("lmtune.train.loop")
run_state = importlib.import_module("lmtune.train.state")
step_module = importlib.import_module("lmtune.train.step")
classification_task = importlib.import_module("lmtune.tasks.classification")

TRAIN = {"epochs": 2, "log_every_n_steps": 1, "save_every_n_steps": 1, "keep_last_checkpoints": 100}


def config(tiny_models, toy_data, out: Path, **train) -> dict:
    return make_config(tiny_models["bert"], toy_data, out, train={**TRAIN, **train})


def train_losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["type"] == "train"]


def assert_same_run(a: Path, b: Path) -> None:
    assert train_losses(a) == train_losses(b)
    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def copy_checkpoint(ref: Path, step: int, target: Path) -> None:
    """A run folder as a run killed right after writing checkpoint `step` would leave it."""
    (target / "checkpoints").mkdir(parents=True)
    state = json.loads((ref / "checkpoints" / f"step-{step}" / "state.json").read_text())
    for s in {step, state["best"]["step"]} - {0}:
        shutil.copytree(ref / "checkpoints" / f"step-{s}", target / "checkpoints" / f"step-{s}")
    shutil.copy(ref / "config.yaml", target / "config.yaml")


@pytest.fixture(scope="module")
def reference(tiny_models, toy_data, tmp_path_factory):
    """Uninterrupted runs, keyed by (gradient_accumulation_steps, dataloader_workers)."""
    runs = {}
    for accumulation, workers in [(1, 0), (2, 1), (2, 0), (1, 1)]:
        out = tmp_path_factory.mktemp("ref") / "run"
        cfg = config(tiny_models, toy_data, out, gradient_accumulation_steps=accumulation, dataloader_workers=workers)
        lmtune.train(cfg, progress=False)
        runs[(accumulation, workers)] = out
    return runs


@pytest.mark.parametrize(("accumulation", "workers", "step"), [(1, 0, 7), (1, 0, 15), (2, 1, 5), (2, 0, 5), (1, 1, 7)])
def test_resume_at_step_k_equals_the_uninterrupted_run(reference, tiny_models, toy_data, tmp_path, accumulation, workers, step):
    ref = reference[(accumulation, workers)]
    state = json.loads((ref / "checkpoints" / f"step-{step}" / "state.json").read_text())
    assert step == 15 or state["progress"]["batches_in_epoch"] > 0  # mid-epoch (15: at the epoch's end)
    copy_checkpoint(ref, step, tmp_path / "run")
    cfg = config(tiny_models, toy_data, tmp_path / "run", gradient_accumulation_steps=accumulation, dataloader_workers=workers)
    result = lmtune.train({**cfg, "resume": "auto"}, progress=False)
    assert_same_run(ref, result.output_dir)
    assert json.loads((ref / "metrics.json").read_text())["accuracy"] == result.metrics["accuracy"]


def test_resume_without_restoring_the_rng_differs(reference, tiny_models, toy_data, tmp_path, monkeypatch):
    """Negative control: the equality above depends on the RNG restore (dropout is on)."""
    ref = reference[(1, 0)]
    copy_checkpoint(ref, 7, tmp_path / "run")
    monkeypatch.setattr(run_state, "restore_rng", lambda state: None)
    lmtune.train({**config(tiny_models, toy_data, tmp_path / "run"), "resume": "auto"}, progress=False)
    ours, theirs = train_losses(tmp_path / "run"), train_losses(ref)
    assert ours[:7] == theirs[:7] and ours[7:] != theirs[7:]


def write_yaml(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_cli(cfg_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lmtune.cli", "train", str(cfg_path), "--quiet", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)


def test_sigkill_mid_run_then_resume_equals_the_uninterrupted_run(reference, tiny_models, toy_data, tmp_path):
    out = tmp_path / "run"
    cfg = config(tiny_models, toy_data, out)
    proc = start_cli(write_yaml(cfg, tmp_path / "cfg.yaml"))
    wait_for(out / "checkpoints" / "step-6", proc)
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL and not (out / "metrics.json").exists()
    killed = RunDir(out).read_status()
    assert killed.state == "running" and killed.ended == "failed"  # its process is gone: it said nothing, but it ended
    lmtune.train({**cfg, "resume": "auto"}, progress=False)
    assert_same_run(reference[(1, 0)], out)


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(reference, tiny_models, toy_data, tmp_path):
    out = tmp_path / "run"
    cfg = config(tiny_models, toy_data, out, save_every_n_steps=1000)  # the only checkpoints: epoch ends and the stop
    cfg_path = write_yaml(cfg, tmp_path / "cfg.yaml")
    proc = start_cli(cfg_path)
    wait_for(out / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr and "--resume" in stderr
    stopped = ckpt.latest_valid(out / "checkpoints")
    assert stopped is not None and not (out / "metrics.json").exists()
    record, total = RunDir(out).read_status(), json.loads((reference[(1, 0)] / "metrics.json").read_text())["steps"]
    assert (record.state, record.step, record.total_steps) == ("stopped", int(stopped.name.removeprefix("step-")), total)
    assert record.reason.startswith("stopped by SIGTERM") and not record.is_live()
    resumed = subprocess.run([sys.executable, "-m", "lmtune.cli", "train", str(cfg_path), "--quiet", "--resume"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {stopped}" in (out / "train.log").read_text()
    done = RunDir(out).read_status()
    assert (done.state, done.step, done.start_step, done.reason) == ("finished", total, record.step, None)
    assert_same_run(reference[(1, 0)], out)


# --- atomic checkpoints under SIGKILL ---------------------------------------------------------

WRITER = r"""
import sys, torch
from pathlib import Path
from lmtune.train import checkpoint as ckpt
root = Path(sys.argv[1]); start = int(sys.argv[2])
torch.manual_seed(start)
model = torch.nn.Linear(512, 512)
opt = torch.optim.AdamW(model.parameters())
model(torch.randn(4, 512)).sum().backward(); opt.step()
from safetensors.torch import save_file
print("ready", flush=True)
for step in range(start, start + 10_000):
    tmp = ckpt.begin(root, step)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    ckpt.save_state(opt.state_dict(), tmp / "optimizer.pt")
    ckpt.save_state({"last_epoch": step}, tmp / "scheduler.pt")
    ckpt.save_state(ckpt.rng_state(), tmp / "rng-0.pt")
    (tmp / "config.yaml").write_text("x: 1\n")
    (tmp / "state.json").write_text('{"step": %d}' % step)
    ckpt.commit(root, step)
    ckpt.rotate(root, 2, set())
"""


def test_sigkill_while_saving_never_leaves_a_bad_checkpoint(tmp_path):
    root = tmp_path / "checkpoints"
    rng = __import__("random").Random(0)
    kills = 0
    for attempt in range(21):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(attempt * 10_000)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready", proc.communicate()
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.communicate()
        kills += proc.returncode == -signal.SIGKILL
        for _, folder in ckpt.listed(root):
            ckpt.verify(folder)  # every step-N folder that exists is complete
            for name in ("optimizer.pt", "scheduler.pt", "rng-0.pt"):
                ckpt.load_state(folder / name)
    assert kills >= 20
    assert ckpt.latest_valid(root) is not None


# --- bad numbers, full disks, out of memory ---------------------------------------------------


def poisoned_loss(monkeypatch, bad_steps: set[int], error: type[BaseException] | None = None, rows_over: int = 0):
    """Make the training loss non-finite (or raise `error`) at the given optimizer steps."""
    build = classification_task.build_loss
    calls = {"n": 0}

    def build_loss(*args, **kwargs):
        real = build(*args, **kwargs)

        def loss(logits, target):
            if not logits.requires_grad:  # evaluation
                return real(logits, target)
            if error is not None and logits.shape[0] > rows_over:
                raise error("CUDA out of memory. Tried to allocate 2.00 GiB")
            calls["n"] += 1
            value = real(logits, target)
            return value * float("nan") if calls["n"] in bad_steps else value

        return loss

    monkeypatch.setattr(classification_task, "build_loss", build_loss)


def test_non_finite_steps_are_skipped_and_counted(tiny_models, toy_data, tmp_path, monkeypatch):
    poisoned_loss(monkeypatch, {3, 4})
    result = lmtune.train(config(tiny_models, toy_data, tmp_path / "run"), progress=False)
    assert result.metrics["skipped_steps"] == 2
    log_text = (tmp_path / "run" / "train.log").read_text()
    assert "step 3: non-finite loss" in log_text and "2 steps were skipped" in log_text
    losses = dict(train_losses(tmp_path / "run"))
    assert losses[3] is None and losses[4] is None  # nothing trained at these steps: no loss to report
    assert all(v == v for s, v in losses.items() if s not in (3, 4))  # and no NaN anywhere


def test_a_streak_of_non_finite_steps_stops_with_the_checkpoint_before_it(reference, tiny_models, toy_data, tmp_path, monkeypatch):
    poisoned_loss(monkeypatch, set(range(5, 100)))
    with pytest.raises(TrainingError, match="learning rate") as err:
        lmtune.train(config(tiny_models, toy_data, tmp_path / "run", save_every_n_steps=3, max_bad_steps=3), progress=False)
    assert "step 4 holds the weights from before" in str(err.value)
    latest = ckpt.latest_valid(tmp_path / "run" / "checkpoints")
    assert latest.name == "step-4"
    ours = load_file(latest / "model.safetensors")
    clean = load_file(reference[(1, 0)] / "checkpoints" / "step-4" / "model.safetensors")
    assert all(torch.equal(ours[n], clean[n]) for n in clean)


@pytest.mark.parametrize("background", [True, False])
def test_disk_full_while_saving_keeps_the_previous_checkpoint(tiny_models, toy_data, tmp_path, monkeypatch, background):
    real = run_state.save_state
    calls = {"optimizer": 0}

    def save_state(obj, path):
        if path.name == "optimizer.pt":
            calls["optimizer"] += 1
            if calls["optimizer"] == 2:
                with open(path, "wb") as f:  # half a file, then the disk is full
                    f.write(b"\0" * 100)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(obj, path)

    monkeypatch.setattr(run_state, "save_state", save_state)
    cfg = config(tiny_models, toy_data, tmp_path / "run", save_every_n_steps=4, keep_last_checkpoints=1,
                 background_checkpoints=background)
    with pytest.raises(CheckpointError, match="No space left on device") as err:
        lmtune.train(cfg, progress=False)
    assert "previous checkpoint step-4 is intact" in str(err.value)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "No space left on device" in status["reason"]
    # a background write fails while the next steps train: the run stops at the first boundary after, at the latest
    # when the next checkpoint (step 12) is due
    assert 8 <= status["step"] <= 12 if background else status["step"] == 8
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step-4"]  # no staging folder left behind
    ckpt.verify(root / "step-4")
    monkeypatch.setattr(run_state, "save_state", real)
    result = lmtune.train({**cfg, "resume": "auto"}, progress=False)
    assert result.metrics["steps"] == 30


def test_out_of_memory_says_what_to_change_and_keeps_a_checkpoint(tiny_models, toy_data, tmp_path, monkeypatch):
    poisoned_loss(monkeypatch, set(), error=torch.OutOfMemoryError, rows_over=4)
    with pytest.raises(TrainingError, match="out of memory at step 1 on a micro-batch of 16 examples") as err:
        lmtune.train(config(tiny_models, toy_data, tmp_path / "run"), progress=False)
    assert "train.batch_size=16" in str(err.value) and "auto_batch_size" in str(err.value)
    assert ckpt.latest_valid(tmp_path / "run" / "checkpoints").name == "step-0"


def test_auto_batch_size_splits_batches_until_they_fit(tiny_models, toy_data, tmp_path, monkeypatch):
    poisoned_loss(monkeypatch, set(), error=torch.OutOfMemoryError, rows_over=4)
    result = lmtune.train(config(tiny_models, toy_data, tmp_path / "run", auto_batch_size=True), progress=False)
    assert result.metrics["steps"] == 30
    assert "micro-batches of 4" in (tmp_path / "run" / "train.log").read_text()


class CrossEntropyTask:
    def units(self, batch):
        return batch["target"].shape[0]

    def loss(self, model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return torch.nn.functional.cross_entropy(logits, batch["target"], reduction="sum"), self.units(batch)


def test_split_batches_give_the_gradient_of_the_whole_batch(tiny_models):
    from accelerate import Accelerator

    from lmtune.config import ModelConfig, TrainConfig
    from lmtune.models.loading import load_classifier, load_tokenizer

    mc = ModelConfig(name_or_path=str(tiny_models["bert"]))
    net = load_classifier(mc, load_tokenizer(mc), ["a", "b"], "single_label_classification").eval()
    torch.manual_seed(0)
    ids = torch.randint(5, 30, (6, 9))
    mask = torch.ones_like(ids)
    mask[2:, 5:] = 0
    batch = {"input_ids": ids * mask, "attention_mask": mask, "target": torch.tensor([0, 1, 1, 0, 1, 0])}
    grads = []
    for splits in (1, 4):
        net.zero_grad()
        state = step_module.Progress(splits=splits)
        stepper = step_module.Stepper(net, None, None, CrossEntropyTask(), Accelerator(cpu=True), TrainConfig(), state)
        net.eval()  # no dropout: the two ways must agree to rounding
        stepper._forward_backward([batch])
        grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6)


# --- what may change on resume ----------------------------------------------------------------


def finished_run(tiny_models, toy_data, out: Path) -> dict:
    cfg = config(tiny_models, toy_data, out, save_every_n_steps=1000)
    lmtune.train(cfg, progress=False)
    return cfg


def test_a_changed_hyperparameter_is_refused_with_a_diff(tiny_models, toy_data, tmp_path):
    cfg = finished_run(tiny_models, toy_data, tmp_path / "run")
    changed = {**cfg, "resume": "auto", "train": {**cfg["train"], "learning_rate": 1e-4, "epochs": 3}}
    with pytest.raises(ConfigError) as err:
        lmtune.train(changed, progress=False)
    assert "train.learning_rate: 0.002 -> 0.0001" in str(err.value) and "--allow-changes" in str(err.value)
    result = lmtune.train({**changed, "resume_allow_changes": True}, progress=False)
    assert result.metrics["steps"] == 45  # continued to the third epoch


def test_a_different_batch_size_or_data_is_never_resumed(tiny_models, toy_data, tmp_path):
    cfg = finished_run(tiny_models, toy_data, tmp_path / "run")
    bigger = {**cfg, "resume": "auto", "resume_allow_changes": True, "train": {**cfg["train"], "batch_size": 32}}
    with pytest.raises(ConfigError, match="train.batch_size: 16 -> 32"):
        lmtune.train(bigger, progress=False)
    other = tmp_path / "train.csv"
    other.write_text(Path(toy_data["train"]).read_text().replace("great", "good"))
    moved = {**cfg, "resume": "auto", "data": {**cfg["data"], "train": str(other)}}
    with pytest.raises(ConfigError, match="data content differs"):
        lmtune.train(moved, progress=False)
    same = tmp_path / "same.csv"
    shutil.copy(toy_data["train"], same)  # the same data at another path is fine
    lmtune.train({**cfg, "resume": "auto", "data": {**cfg["data"], "train": str(same)}}, progress=False)


def test_a_named_checkpoint_that_is_invalid_is_an_error_not_a_fresh_start(tiny_models, toy_data, tmp_path):
    cfg = finished_run(tiny_models, toy_data, tmp_path / "run")
    folder = ckpt.latest_valid(tmp_path / "run" / "checkpoints")
    (folder / "optimizer.pt").write_bytes(b"damaged")
    with pytest.raises(CheckpointError, match="not a usable checkpoint.*optimizer.pt does not match"):
        lmtune.train({**cfg, "resume": str(folder), "output": {"dir": str(tmp_path / "new")}}, progress=False)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("name", ["../secret", "shards/../../secret", "/etc/passwd", "shards//x", "link/secret"])
def test_manifest_names_must_stay_inside_the_checkpoint(tmp_path, name):
    folder = tmp_path / "step-1"
    folder.mkdir()
    (tmp_path / "secret").write_text("x")
    (folder / "link").symlink_to(tmp_path)  # a folder inside that leads outside
    required = ckpt.REQUIRED["full"]
    manifest = {"format": 1, "step": 1, "files": {n: {"bytes": 0, "sha256": ""} for n in required}}
    manifest["files"][name] = {"bytes": 1, "sha256": ckpt.sha256_file(tmp_path / "secret")}
    for n in required:
        (folder / n).write_bytes(b"")
        manifest["files"][n]["sha256"] = ckpt.sha256_file(folder / n)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="not a file inside the checkpoint"):
        ckpt.verify(folder)


def test_a_pickle_that_would_run_code_is_refused(tiny_models, toy_data, tmp_path):
    cfg = finished_run(tiny_models, toy_data, tmp_path / "run")
    folder = ckpt.latest_valid(tmp_path / "run" / "checkpoints")
    marker = tmp_path / "pwned"
    with (folder / "optimizer.pt").open("wb") as f:
        pickle.dump({"state": PicklePayload(str(marker))}, f)
    manifest = json.loads((folder / "manifest.json").read_text())  # re-sign it: the manifest cannot tell
    manifest["files"]["optimizer.pt"] = {"bytes": (folder / "optimizer.pt").stat().st_size,
                                         "sha256": ckpt.sha256_file(folder / "optimizer.pt")}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="could run code"):
        lmtune.train({**cfg, "resume": str(folder), "output": {"dir": str(tmp_path / "new")}}, progress=False)
    assert not marker.exists()


def test_resume_auto_without_a_checkpoint_starts_fresh(tiny_models, toy_data, tmp_path):
    cfg = {**config(tiny_models, toy_data, tmp_path / "run", save_every_n_steps=1000), "resume": "auto"}
    assert lmtune.train(cfg, progress=False).metrics["steps"] == 30


def test_a_second_signal_stops_at_once():
    from lmtune.train.signals import StopRequest

    before = signal.getsignal(signal.SIGINT)  # the default, or SIG_IGN in a job started in the background
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs between bytecodes of the main thread
        assert stop.signal_number == signal.SIGINT  # the first: noted, the loop will checkpoint
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_an_unexpected_error_mid_step_leaves_a_checkpoint_to_resume(reference, tiny_models, toy_data, tmp_path, monkeypatch):
    build = classification_task.build_loss
    calls = {"n": 0}

    def build_loss(*args, **kwargs):
        real = build(*args, **kwargs)

        def loss(logits, target):
            if logits.requires_grad:
                calls["n"] += 1
                if calls["n"] == 6:
                    raise RuntimeError("a bug in a custom loss")
            return real(logits, target)

        return loss

    monkeypatch.setattr(classification_task, "build_loss", build_loss)
    cfg = config(tiny_models, toy_data, tmp_path / "run", save_every_n_steps=1000)  # no step checkpoint before
    with pytest.raises(RuntimeError, match="a bug in a custom loss"):
        lmtune.train(cfg, progress=False)
    assert ckpt.latest_valid(tmp_path / "run" / "checkpoints").name == "step-5"
    failed = RunDir(tmp_path / "run").read_status()
    assert (failed.state, failed.reason) == ("failed", "failed: RuntimeError: a bug in a custom loss")
    monkeypatch.setattr(classification_task, "build_loss", build)
    lmtune.train({**cfg, "resume": "auto"}, progress=False)
    assert_same_run(reference[(1, 0)], tmp_path / "run")


# --- one command line for a job that may be killed at any moment -------------------------------


def test_killed_before_its_first_checkpoint_the_same_command_line_completes_the_run(reference, tiny_models, toy_data, tmp_path):
    """SIGKILL from start to the first checkpoint, at least ten times; `--resume` then always finishes the run."""
    import random

    out = tmp_path / "run"
    cfg_path = write_yaml(config(tiny_models, toy_data, out), tmp_path / "cfg.yaml")
    first = out / "checkpoints" / "step-1"
    started = time.monotonic()
    proc = start_cli(cfg_path, "--resume")
    wait_for(first, proc)
    window = time.monotonic() - started  # from launch to the first complete checkpoint
    proc.kill()
    proc.communicate()
    shutil.rmtree(out)
    # Kill at random moments, and at the moments files appear: the run folder, the first log record, the
    # staging folder of the first checkpoint.
    triggers = [None, out / "config.yaml", out / "metrics.jsonl", out / "checkpoints" / ".staging-step-1"]
    rng = random.Random(0)
    kills = 0
    for attempt in range(16):
        proc = start_cli(cfg_path, "--resume")
        trigger, deadline = triggers[attempt % 4], time.monotonic() + rng.uniform(0.0, window)
        while proc.poll() is None and not first.exists():
            if (trigger is None and time.monotonic() >= deadline) or (trigger is not None and trigger.exists()):
                break
            time.sleep(0.001)
        proc.kill()
        _, stderr = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, stderr
        assert not out.exists() or (out / "config.yaml").is_file()  # absent, or a run folder
        if ckpt.latest_valid(out / "checkpoints") is not None:  # too late: the first checkpoint was complete
            shutil.rmtree(out)
            continue
        kills += 1
        if kills == 12:
            break
    assert kills >= 10
    had_folder = out.exists()
    done = subprocess.run([sys.executable, "-m", "lmtune.cli", "train", str(cfg_path), "--quiet", "--resume"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if had_folder:
        assert "starting it over" in done.stderr and "starting it over" in (out / "train.log").read_text()
    assert not list((out / "checkpoints").glob(".staging-*")) and not list(tmp_path.glob(".run.trash-*"))
    assert_same_run(reference[(1, 0)], out)


def test_resume_auto_on_a_run_of_another_config_without_a_checkpoint_is_refused(tiny_models, toy_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump({**config(tiny_models, toy_data, out), "train": {"epochs": 1}}))
    (out / "checkpoints" / ".staging-step-1").mkdir(parents=True)
    with pytest.raises(ConfigError) as err:
        lmtune.train({**config(tiny_models, toy_data, out), "resume": "auto"}, progress=False)
    message = str(err.value)
    assert "another config" in message and "train.epochs: 1 -> 2" in message and "output.overwrite=true" in message
    assert "resume it with --resume" not in message
    assert (out / "checkpoints" / ".staging-step-1").is_dir()  # nothing was touched


@pytest.mark.parametrize("keep", [0, 100])
def test_resume_on_a_finished_run_says_so_and_changes_nothing(tiny_models, toy_data, tmp_path, keep, caplog):
    out = tmp_path / "run"
    cfg = config(tiny_models, toy_data, out, keep_last_checkpoints=keep, save_every_n_steps=1000)
    first = lmtune.train(cfg, progress=False)
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with caplog.at_level("INFO", logger="lmtune"):
        again = lmtune.train({**cfg, "resume": "auto"}, progress=False)
    assert "finished run" in caplog.text and "nothing to resume" in caplog.text
    assert again.metrics == first.metrics and again.best_step == first.best_step
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == written
