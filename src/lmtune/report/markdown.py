"""`report.md`: what a run did and how good it got, rebuilt from the files in its run folder.

Everything comes from the run folder (config.yaml, metrics.jsonl, metrics.json, the saved model's
lmtune.json, validation_predictions.csv, samples.jsonl), so `lmtune report RUN` writes the same
report as the run did, and it works on a run that stopped early. Nothing in it depends on when
the report was written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.config import Config
from lmtune.errors import ConfigError
from lmtune.eval.metrics import scalar_metrics
from lmtune.figures.curves import loss_plot, metric_plots
from lmtune.figures.markdown import cell, image, number, table
from lmtune.files import write_text
from lmtune.models.methods import METHODS
from lmtune.run_dir import RunDir, RunStatus
from lmtune.tasks import TASKS

MAX_SAMPLES = 5  # generated replies shown in the report


@dataclass
class RunFiles:
    """What a run folder holds, read and checked."""

    run: RunDir
    cfg: Config
    history: list[dict[str, Any]]  # metrics.jsonl
    result: dict[str, Any] | None  # metrics.json: present once the run finished
    status: RunStatus | None  # status.json: how the run stands or ended
    meta: dict[str, Any] | None  # lmtune.json of the saved model
    predictions: list[dict[str, str]]  # validation_predictions.csv
    samples: list[dict[str, Any]]  # samples.jsonl

    @property
    def folder(self) -> Path:
        return self.run.path

    @property
    def evals(self) -> list[dict[str, Any]]:
        return [r for r in self.history if r.get("type") == "eval"]

    @property
    def best_step(self) -> int | None:
        return self.result.get("best_step") if self.result is not None else None


def read_run(folder: Path) -> RunFiles:
    run = RunDir(folder)
    if not run.config_file.is_file():
        raise ConfigError(f"{folder} is not an lmtune run folder: it has no {run.config_file.name}")
    return RunFiles(run, run.read_config(), run.read_history(), run.read_metrics(), run.read_status(), run.model_meta(),
                    run.read_predictions("validation"), run.read_samples())


def write_report(folder: Path | str) -> Path:
    """Write `report.md` and its plots (in `plots/`) for the run in `folder`; returns the report's path."""
    run = read_run(Path(folder))
    plots = run.run.plots
    plots.mkdir(exist_ok=True)
    sections = [_header(run), _setup(run), _time(run), _metrics(run)]
    written: list[Path] = []
    curves = []
    train = [r for r in run.history if r.get("type") == "train"]
    if train or run.evals:
        written.append(loss_plot(train, run.evals, plots / "loss.png"))
        curves.append(image("Training and evaluation loss", written[-1], run.folder))
    for path in metric_plots(run.evals, plots):
        written.append(path)
        name = "metrics" if path.stem == "metrics" else path.stem.removeprefix("metric-")
        curves.append(image(f"Validation {name}", path, run.folder))
    if curves:
        sections.append("## Curves\n\n" + "\n\n".join(curves))
    errors, drawn = TASKS[run.cfg.task].report(run, plots)
    written += drawn
    if errors:
        sections.append(errors)
    if run.samples:
        sections.append(_samples(run))
    for stale in plots.glob("*.png"):  # plots of an earlier report that no longer apply
        if stale not in written:
            stale.unlink()
    path = run.run.report_file
    write_text(path, "\n\n".join(s.strip() for s in sections) + "\n")
    return path


def _header(run: RunFiles) -> str:
    cfg = run.cfg
    lines = [f"# Run report: {run.folder.name}", ""]
    if run.result is not None:
        r = run.result
        best = r.get(r["best_metric"])
        state = f"finished after {r['steps']} steps"
        if best is not None:
            state += f"; best {r['best_metric']} {number(best)} at step {r['best_step']}"
    elif run.status is not None:
        st = run.status
        state = {"running": f"**still running**: step {st.step} of {st.total_steps}",
                 "stopped": f"**stopped** at step {st.step} of {st.total_steps}",
                 "pruned": f"**pruned by the search** at step {st.step} of {st.total_steps}",
                 "finished": f"**finished** at step {st.step} without metrics.json",
                 "failed": f"**failed** at step {st.step} of {st.total_steps}"}[st.ended]
        if st.ended != "running":
            state += f" ({st.reason or 'its process ended without saying why'})"
    elif run.history:
        state = f"**not finished**: the last record is from step {run.history[-1].get('step', 0)}"
    else:
        state = "**not finished**: nothing was logged yet"
    lines.append(f"Task `{cfg.task}`, method `{cfg.method.name}`: {state}. The full config is in `config.yaml`.")
    return "\n".join(lines)


def _method(cfg: Config) -> str:
    method = METHODS.get(cfg.method.name)
    return method.describe(cfg.method) if method else f"`{cfg.method.name}`"


def _setup(run: RunFiles) -> str:
    cfg, r, meta = run.cfg, run.result or {}, run.meta or {}
    t = cfg.train
    rows = [("Model", f"`{cfg.model.name_or_path}`" + (f" (`{cfg.model.gguf_file}`)" if cfg.model.gguf_file else ""))]
    if meta.get("labels"):
        rows.append(("Labels", f"{meta['label_type']}: " + ", ".join(map(str, meta["labels"]))))
    rows.append(("Method", _method(cfg)))
    if "total_parameters" in r:
        total, trainable = r["total_parameters"], r["trainable_parameters"]
        rows.append(("Parameters", f"{total:,} total, {trainable:,} trainable ({100 * trainable / total:.2f}%)"))
    def counted(split: str) -> str:
        windows = f" in {r[f'{split}_windows']:,} windows" if f"{split}_windows" in r else ""  # extractive QA
        return f" ({r[f'{split}_examples']:,} examples{windows})"

    data = f"train `{cfg.data.train}`"
    if "train_examples" in r:
        data += counted("train")
    if cfg.data.validation:
        data += f"; validation `{cfg.data.validation}`"
    elif cfg.data.validation_split:
        data += f"; validation: {cfg.data.validation_split:.0%} of train"
    if r.get("validation_examples"):
        data += counted("validation")
    if cfg.data.test:
        data += f"; test `{cfg.data.test}`"
    rows.append(("Data", data))
    if r.get("redacted"):
        rows.append(("Redacted", ", ".join(f"{n:,} {name}" for name, n in r["redacted"].items()) + " replaced by `<NAME>` (data.redact)"))
    schedule = f"{t.epochs} epochs" + (f", at most {t.max_steps} steps" if t.max_steps else "")
    schedule += f"; batch {t.batch_size}" + (f" x {t.gradient_accumulation_steps} accumulated" if t.gradient_accumulation_steps > 1 else "")
    schedule += f"; {t.optimizer}, learning rate {number(t.learning_rate)}"
    if t.head_learning_rate:
        schedule += f" (head {number(t.head_learning_rate)})"
    warmup = f"{t.warmup_steps} warmup steps" if t.warmup_steps is not None else f"warmup {number(t.warmup_ratio)}"
    schedule += f", {t.scheduler} schedule, {warmup}; {t.precision}; seed {t.seed}"
    rows.append(("Training", schedule))
    return "## Setup\n\n" + table(["", ""], rows)


def _time(run: RunFiles) -> str:
    r = run.result
    if r is None:
        return "## Time\n\nThe run has not finished: `metrics.json` is missing, so times are not known."
    rows = [(
        str(r["steps"]),
        f"{r['train_runtime_s']:.1f} s",
        number(r.get("train_examples_per_s")),
        number(r.get("train_tokens_per_s")),
        str(r.get("skipped_steps", 0)),
    )]
    return "## Time\n\n" + table(["Steps", "Training time", "Examples/s", "Tokens/s", "Skipped steps"], rows)


def _metrics(run: RunFiles) -> str:
    """Before training, best, last evaluation and test, side by side."""
    columns: list[tuple[str, dict[str, float]]] = []
    r = run.result or {}
    if "initial" in r:
        columns.append(("Before training", scalar_metrics(r["initial"])))
    elif run.evals and run.evals[0]["step"] == 0:
        columns.append(("Before training", scalar_metrics(run.evals[0])))
    best_step = run.best_step
    best = next((e for e in run.evals if e["step"] == best_step), None)
    if best is not None:
        columns.append((f"Best (step {best_step})", scalar_metrics(best)))
    if run.evals and run.evals[-1] is not best and run.evals[-1]["step"] != 0:
        columns.append((f"Last evaluation (step {run.evals[-1]['step']})", scalar_metrics(run.evals[-1])))
    if "test" in r:
        columns.append(("Test", scalar_metrics(r["test"])))
    if not columns:
        return "## Metrics\n\nNo evaluation has been logged."
    names: list[str] = []
    main = r.get("best_metric")
    for _, values in columns:
        names += [n for n in values if n not in names]
    names.sort(key=lambda n: (n != main, n))
    rows = [(f"**{n}**" if n == main else n, *(number(v.get(n)) for _, v in columns)) for n in names]
    return "## Metrics (validation)\n\n" + table(["Metric", *(c for c, _ in columns)], rows)


def _samples(run: RunFiles) -> str:
    best_step = run.best_step
    steps = sorted({s["step"] for s in run.samples})
    step = best_step if best_step in steps else steps[-1]
    shown = [s for s in run.samples if s["step"] == step][:MAX_SAMPLES]
    rows = [(cell(s.get("prompt", "")), cell(s.get("reference", "")), cell(s.get("prediction", ""))) for s in shown]
    return (f"## Generated replies (step {step})\n\nThe first {len(shown)} of `samples.jsonl`.\n\n"
            + table(["Prompt", "Reference", "Reply"], rows))
