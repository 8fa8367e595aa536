"""`report.md`: what a run did and how good it got, rebuilt from the files in its run folder.

Everything comes from the run folder (config.yaml, metrics.jsonl, metrics.json, the saved model's
lmtune.json, validation_predictions.csv, samples.jsonl), so `lmtune report RUN` writes the same
report as the run did, and it works on a run that stopped early. Nothing in it depends on when
the report was written.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmtune.config import Config, load_config
from lmtune.errors import ConfigError, DataError
from lmtune.models.saving import write_text
from lmtune.eval.metrics import scalar_metrics
from lmtune.report.curves import confusion_plot, loss_plot, metric_plots, roc_pr_plots

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
MAX_SAMPLES = 5  # generated replies shown in the report


@dataclass
class RunFiles:
    """What a run folder holds, read and checked."""

    folder: Path
    cfg: Config
    history: list[dict[str, Any]]  # metrics.jsonl
    result: dict[str, Any] | None  # metrics.json: present once the run finished
    meta: dict[str, Any] | None  # lmtune.json of the saved model
    predictions: list[dict[str, str]]  # validation_predictions.csv
    samples: list[dict[str, Any]]  # samples.jsonl

    @property
    def evals(self) -> list[dict[str, Any]]:
        return [r for r in self.history if r.get("type") == "eval"]


def read_run(folder: Path) -> RunFiles:
    folder = Path(folder)
    config = folder / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{folder} is not an lmtune run folder: it has no config.yaml")
    cfg = load_config(config)
    result = _json(folder / "metrics.json")
    meta = _json(folder / "best" / "lmtune.json") or _json(folder / "final" / "lmtune.json")
    predictions: list[dict[str, str]] = []
    if (folder / "validation_predictions.csv").is_file():
        with (folder / "validation_predictions.csv").open(encoding="utf-8", newline="") as f:
            predictions = list(csv.DictReader(f))
    return RunFiles(folder, cfg, _jsonl(folder / "metrics.jsonl"), result, meta, predictions, _jsonl(folder / "samples.jsonl"))


def _json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); the report cannot be built from it") from None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a line cut short by a crash is left out."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def write_report(folder: Path | str) -> Path:
    """Write `report.md` and its plots (in `plots/`) for the run in `folder`; returns the report's path."""
    run = read_run(Path(folder))
    plots = run.folder / PLOTS_DIR
    plots.mkdir(exist_ok=True)
    sections = [_header(run), _setup(run), _time(run), _metrics(run)]
    written: list[Path] = []
    curves = []
    train = [r for r in run.history if r.get("type") == "train"]
    if train or run.evals:
        written.append(loss_plot(train, run.evals, plots / "loss.png"))
        curves.append(_image("Training and evaluation loss", written[-1], run.folder))
    for path in metric_plots(run.evals, plots):
        written.append(path)
        name = "metrics" if path.stem == "metrics" else path.stem.removeprefix("metric-")
        curves.append(_image(f"Validation {name}", path, run.folder))
    if curves:
        sections.append("## Curves\n\n" + "\n\n".join(curves))
    errors, drawn = _classification_plots(run, plots)
    written += drawn
    if errors:
        sections.append(errors)
    if run.samples:
        sections.append(_samples(run))
    for stale in plots.glob("*.png"):  # plots of an earlier report that no longer apply
        if stale not in written:
            stale.unlink()
    path = run.folder / REPORT_FILE
    write_text(path, "\n\n".join(s.strip() for s in sections) + "\n")
    return path


def _image(title: str, path: Path, folder: Path) -> str:
    return f"![{title}]({path.relative_to(folder).as_posix()})"


def _best_step(run: RunFiles) -> int | None:
    if run.result is not None:
        return run.result.get("best_step")
    return None


def _header(run: RunFiles) -> str:
    cfg = run.cfg
    lines = [f"# Run report: {run.folder.name}", ""]
    if run.result is not None:
        r = run.result
        best = r.get(r["best_metric"])
        state = f"finished after {r['steps']} steps"
        if best is not None:
            state += f"; best {r['best_metric']} {_number(best)} at step {r['best_step']}"
    elif run.history:
        state = f"**not finished**: the last record is from step {run.history[-1].get('step', 0)}"
    else:
        state = "**not finished**: nothing was logged yet"
    lines.append(f"Task `{cfg.task}`, method `{cfg.method.name}`: {state}. The full config is in `config.yaml`.")
    return "\n".join(lines)


def _method(cfg: Config) -> str:
    m = cfg.method
    if m.name == "full":
        return "full fine-tuning (every parameter trains)"
    if m.name == "lora":
        targets = ", ".join(m.lora_target_modules) if m.lora_target_modules else "every linear layer of the blocks"
        return f"LoRA, rank {m.lora_rank}, alpha {_number(m.lora_alpha)}, dropout {_number(m.lora_dropout)}, on {targets}"
    parts = []
    if m.trainable_layers is not None:
        parts.append(f"the last {m.trainable_layers} blocks")
    if m.layers:
        parts.append(f"blocks {m.layers}")
    if m.modules:
        parts.append("parameters matching " + ", ".join(f"`{x}`" for x in m.modules))
    if m.train_embeddings:
        parts.append("the embeddings")
    return "freeze: trains " + (", ".join(parts) if parts else "the head only") + " (and the new head)"


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
    data = f"train `{cfg.data.train}`"
    if "train_examples" in r:
        data += f" ({r['train_examples']:,} examples)"
    if cfg.data.validation:
        data += f"; validation `{cfg.data.validation}`"
    elif cfg.data.validation_split:
        data += f"; validation: {cfg.data.validation_split:.0%} of train"
    if r.get("validation_examples"):
        data += f" ({r['validation_examples']:,} examples)"
    if cfg.data.test:
        data += f"; test `{cfg.data.test}`"
    rows.append(("Data", data))
    schedule = f"{t.epochs} epochs" + (f", at most {t.max_steps} steps" if t.max_steps else "")
    schedule += f"; batch {t.batch_size}" + (f" x {t.gradient_accumulation_steps} accumulated" if t.gradient_accumulation_steps > 1 else "")
    schedule += f"; {t.optimizer}, learning rate {_number(t.learning_rate)}"
    if t.head_learning_rate:
        schedule += f" (head {_number(t.head_learning_rate)})"
    warmup = f"{t.warmup_steps} warmup steps" if t.warmup_steps is not None else f"warmup {_number(t.warmup_ratio)}"
    schedule += f", {t.scheduler} schedule, {warmup}; {t.precision}; seed {t.seed}"
    rows.append(("Training", schedule))
    return "## Setup\n\n" + _table(["", ""], rows)


def _time(run: RunFiles) -> str:
    r = run.result
    if r is None:
        return "## Time\n\nThe run has not finished: `metrics.json` is missing, so times are not known."
    rows = [(
        str(r["steps"]),
        f"{r['train_runtime_s']:.1f} s",
        _number(r.get("train_examples_per_s")),
        _number(r.get("train_tokens_per_s")),
        str(r.get("skipped_steps", 0)),
    )]
    return "## Time\n\n" + _table(["Steps", "Training time", "Examples/s", "Tokens/s", "Skipped steps"], rows)


def _metrics(run: RunFiles) -> str:
    """Before training, best, last evaluation and test, side by side."""
    columns: list[tuple[str, dict[str, float]]] = []
    r = run.result or {}
    if "initial" in r:
        columns.append(("Before training", scalar_metrics(r["initial"])))
    elif run.evals and run.evals[0]["step"] == 0:
        columns.append(("Before training", scalar_metrics(run.evals[0])))
    best_step = _best_step(run)
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
    rows = [(f"**{n}**" if n == main else n, *(_number(v.get(n)) for _, v in columns)) for n in names]
    return "## Metrics (validation)\n\n" + _table(["Metric", *(c for c, _ in columns)], rows)


def _classification_plots(run: RunFiles, plots: Path) -> tuple[str, list[Path]]:
    """Confusion matrix of the kept model, and ROC and precision-recall curves when there are two labels."""
    if run.cfg.task != "classification":
        return "", []
    best_step = _best_step(run)
    source = next((e for e in run.evals if e["step"] == best_step), None) or (run.evals[-1] if run.evals else None)
    if source is None or "confusion_matrix" not in source:
        return "", []
    names = (run.meta or {}).get("labels") or [str(i) for i in range(len(source["confusion_matrix"]))]
    parts = ["## Errors of the kept model"]
    if source.get("per_class"):
        rows = [(str(name), _number(c["precision"]), _number(c["recall"]), _number(c["f1"]), f"{c['support']:,}")
                for name, c in source["per_class"].items()]
        parts.append(_table(["Label", "Precision", "Recall", "F1", "Support"], rows))
    title = f"Confusion matrix, validation, step {source['step']}"
    written = [confusion_plot(source["confusion_matrix"], [str(n) for n in names], title, plots / "confusion_matrix.png")]
    parts.append(_image(title, written[0], run.folder))
    rows = run.predictions
    if len(names) == 2 and rows and all(r.get("step") == str(source["step"]) for r in rows):
        truth = np.array([r["label"] == str(names[1]) for r in rows], dtype=int)
        if 0 < truth.sum() < len(truth):
            scores = np.array([float(r[f"p_{names[1]}"]) for r in rows])
            roc, pr, roc_auc, ap = roc_pr_plots(truth, scores, str(names[1]), plots)
            written += [roc, pr]
            parts += [_image("ROC curve", roc, run.folder), _image("Precision-recall curve", pr, run.folder)]
            parts.append(f"ROC-AUC {roc_auc:.4f}, average precision {ap:.4f} (positive label: {names[1]}).")
    if rows:
        parts.append("Every validation example with its prediction is in `validation_predictions.csv`.")
    return "\n\n".join(parts), written


def _samples(run: RunFiles) -> str:
    best_step = _best_step(run)
    steps = sorted({s["step"] for s in run.samples})
    step = best_step if best_step in steps else steps[-1]
    shown = [s for s in run.samples if s["step"] == step][:MAX_SAMPLES]
    rows = [(_cell(s.get("prompt", "")), _cell(s.get("reference", "")), _cell(s.get("prediction", ""))) for s in shown]
    return (f"## Generated replies (step {step})\n\nThe first {len(shown)} of `samples.jsonl`.\n\n"
            + _table(["Prompt", "Reference", "Reply"], rows))


def _cell(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3g}"
    return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.1f}"


def _table(header: list[str], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
