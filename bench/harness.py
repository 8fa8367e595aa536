"""What the benchmark scripts share: memory and device readings, one run per subprocess, the
round-robin repeat loop, the common command-line options and the JSON output.

Each script runs one variant per subprocess by re-invoking itself with `--_child VARIANT
--_result PATH`; the child writes its RunResult there as JSON and the parent reads it back.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

R = TypeVar("R")


def current_rss_mib() -> float:
    """Resident memory of this process now, in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def torch_info() -> tuple[str, int]:
    """The device torch would pick (cuda, mps or cpu) and its CPU thread count."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return device, torch.get_num_threads()


def run_child(script: Path, argv: list[str], variant: str, cwd: Path) -> dict[str, Any]:
    """Re-invoke `script` with `argv` for one variant and return the result it wrote; its output is shown only if it fails."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{script.stem}-result-") as tmp:
        result_path = Path(tmp) / "result.json"
        cmd = [sys.executable, str(script), *argv, "--_child", variant, "--_result", str(result_path)]
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0 or not result_path.exists():
            sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
            raise SystemExit(f"{variant}: the run failed (exit status {proc.returncode})")
        return json.loads(result_path.read_text())


def write_child_result(path: Path, result: Any) -> None:
    """Write a child's RunResult dataclass where the parent's `run_child` reads it."""
    path.write_text(json.dumps(asdict(result)))


def round_robin(variants: Sequence[str], repeat: int, run: Callable[[str], R]) -> dict[str, list[R]]:
    """Call `run(variant)` `repeat` times per variant, round-robin, so slow drifts of the machine hit every variant alike."""
    runs: dict[str, list[R]] = {v: [] for v in variants}
    for round_ in range(repeat):
        for variant in runs:
            print(f"running {variant} ({round_ + 1}/{repeat}) ...", flush=True)
            runs[variant].append(run(variant))
    return runs


def median_by_time(runs: list[R]) -> R:
    """The run with the median training time `train_s` (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r.train_s)[(len(runs) - 1) // 2]  # type: ignore[attr-defined]


def compare_lmtune(results: dict[str, R], baselines: Sequence[str], compare: Callable[[R, R], dict[str, float]]) -> dict[str, dict[str, float]]:
    """`compare(lmtune, baseline)` under `lmtune_vs_NAME` for each baseline that ran (nothing when lmtune did not run)."""
    if "lmtune" not in results:
        return {}
    return {f"lmtune_vs_{name}": compare(results["lmtune"], results[name]) for name in baselines if name in results}


def add_common_args(parser: argparse.ArgumentParser, variants: Sequence[str], default_only: Sequence[str]) -> None:
    """Add --only, --repeat, --output-json and the internal --_child/--_result options."""
    choices = ", ".join(variants)
    more = "" if tuple(default_only) == tuple(variants) else " (default: %(default)s)"
    parser.add_argument("--only", default=",".join(default_only), help=f"comma list of {choices}{more}")
    parser.add_argument("--repeat", type=int, default=1, help="run every variant N times (round-robin) and report the median")
    parser.add_argument("--output-json", type=Path, help="also save the numbers here")
    parser.add_argument("--_child", choices=variants, help=argparse.SUPPRESS)  # internal: run one variant here
    parser.add_argument("--_result", type=Path, help=argparse.SUPPRESS)


def check_common_args(parser: argparse.ArgumentParser, args: argparse.Namespace, variants: Sequence[str]) -> None:
    """Turn --only into the chosen variants (in `variants` order) and check it and --repeat (a usage error otherwise)."""
    only = [v.strip() for v in args.only.split(",") if v.strip()]
    unknown = sorted(set(only) - set(variants))
    if unknown or not only:
        parser.error(f"--only takes a comma list of {', '.join(variants)}; got {', '.join(unknown) or 'nothing'}")
    if args.repeat < 1:
        parser.error(f"--repeat takes a count of at least 1; got {args.repeat}")
    args.only = [v for v in variants if v in only]


def with_properties(result: Any, *names: str) -> dict[str, Any]:
    """A RunResult dataclass as a dict, with the named computed properties added."""
    return {**asdict(result), **{name: getattr(result, name) for name in names}}


def environment(extra_packages: Sequence[str] = ()) -> dict[str, str]:
    """Python, torch, transformers and `extra_packages` versions, and the machine."""
    import torch
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    for name in extra_packages:
        env[name] = importlib.import_module(name).__version__
    env.update(platform=platform.platform(), processor=platform.processor() or platform.machine(), cpu_count=str(os.cpu_count()))
    return env


def write_json_payload(
    path: Path,
    settings: Any,
    environment: dict[str, str],
    results: dict[str, dict[str, Any]],
    all_runs: dict[str, list[Any]],
    comparisons: dict[str, dict[str, float]],
) -> None:
    """Save the numbers (settings dataclass, environment, median results, every run, comparisons) as JSON and say where."""
    payload = {
        "settings": asdict(settings),
        "environment": environment,
        "results": results,
        "all_runs": all_runs,
        "comparisons": comparisons,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nnumbers saved to {path}")
