"""The `lmtune` command: train, search, eval, predict, generate, chat, serve, export, merge, demo. Thin: it parses, calls the library, prints."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from lmtune.errors import ConfigError, Interrupted, LmtuneError, OutputError
from lmtune.paths import check_creatable, check_writable_file
from lmtune.progress import quiet


def _train(args: argparse.Namespace) -> int:
    from lmtune.config import load_config
    from lmtune.train.loop import train

    overrides = list(args.overrides)
    if args.resume:
        overrides.append("resume=auto")
    if args.allow_changes:
        overrides.append("resume_allow_changes=true")
    cfg = load_config(args.config, overrides)
    result = train(cfg, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) > 0:  # launched as several processes: the main one prints the result
        return 0
    shown = {k: v for k, v in result.metrics.items() if not isinstance(v, (dict, list))}
    print(json.dumps(shown, indent=2))
    print(f"run folder: {result.output_dir}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from lmtune.config import load_config
    from lmtune.run_dir import SearchDir
    from lmtune.search.study import dump_summary, search

    summary = search(load_config(args.config, list(args.overrides)), workers=args.workers)
    print(dump_summary(summary), end="")
    folder = SearchDir(summary.output_dir)
    best = folder.best_config_file
    print(f"trials: {folder.trials_file}" + (f"; best config: {best}" if best.is_file() else "; no trial completed yet"))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from lmtune.inference import load

    if args.output:
        check_writable_file(args.output, "--output")
    model = load(args.model)
    metrics = model.evaluate(args.data, args.batch_size, max_generate=args.max_generate, max_new_tokens=args.max_new_tokens)
    print(json.dumps(metrics, indent=2))
    if args.output:
        from lmtune.files import write_json

        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(args.output), metrics)
    return 0


def _predict_inputs() -> dict[str, str]:
    """Every field some task's `lmtune predict` takes (--text, --question, ...), with its help."""
    from lmtune.tasks import TASKS

    fields: dict[str, str] = {}
    for task in TASKS.values():
        for name, help_text in task.predict_inputs.items():
            fields.setdefault(name, help_text)
    return fields


def _predict(args: argparse.Namespace) -> int:
    from lmtune.inference import load
    from lmtune.tasks.base import RecordPredictor, input_records

    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    given = {name: values for name in _predict_inputs() if (values := getattr(args, name, None))}
    options = " ".join(f"{flag(name)} \"...\"" for name in _predict_inputs())
    if bool(given) == bool(args.input):
        raise LmtuneError(f"predict needs either the model's inputs ({options}; repeatable) or --input FILE --output FILE")
    if args.input and not args.output:
        raise LmtuneError("predict --input FILE also needs --output FILE (.jsonl, .json or .csv)")
    if args.output:
        _check_rows_file(Path(args.output))
    # checked before the model loads, as training checks its data
    records = input_records(given, flag, lambda name, i: f"{flag(name)} number {i + 1} (of {len(given[name])})")
    predictor = load(args.model)
    task = predictor.meta.get("task")
    if not isinstance(predictor, RecordPredictor):
        raise LmtuneError(f"{args.model} holds a {task} model, which lmtune predict does not take: use lmtune generate "
                          f"(or chat) to get replies from it")
    if records:
        fields = predictor.input_fields
        missing = [flag(name) for name in fields if name not in given]
        extra = [flag(name) for name in given if name not in fields]
        if missing or extra:
            raise LmtuneError(f"{args.model} holds a {task} model: give " + " and ".join(map(flag, fields))
                              + (f" (missing {', '.join(missing)})" if missing else "")
                              + (f" ({', '.join(extra)} does not apply)" if extra else ""))
        for record, pred in zip(records, predictor.predict_records(records, args.batch_size)):
            print(json.dumps({**record, **pred}, ensure_ascii=False))
        return 0
    records = predictor.read_records(args.input)
    preds = predictor.predict_records(records, args.batch_size)
    _write_rows(Path(args.output), [{**r, **p} for r, p in zip(records, preds)])
    print(f"wrote {len(preds)} predictions to {args.output}")
    return 0


def _check_rows_file(path: Path) -> None:
    """Before any model is loaded: the --output file has a known suffix and can be written."""
    if path.suffix.lower() not in (".jsonl", ".json", ".csv"):
        raise LmtuneError(f"--output {path}: use a .jsonl, .json or .csv file name")
    check_writable_file(path, "--output")


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """JSON lines, a JSON list or CSV by the file suffix, written atomically."""
    from lmtune.files import csv_text, write_json, write_jsonl, write_text

    suffix = path.suffix.lower()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".jsonl":
            write_jsonl(path, rows)
        elif suffix == ".json":
            write_json(path, rows)
        else:
            flat = [{k: (json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v) for k, v in r.items()} for r in rows]
            write_text(path, csv_text(flat, list(flat[0]) if flat else ["text"]))
    except OSError as err:  # checked before the model was loaded; the disk can still fill up
        raise OutputError(f"--output {path} could not be written ({err.strerror or err})") from None


def _sampling(args: argparse.Namespace) -> Any:
    from lmtune.eval.generation import Sampling

    if args.max_new_tokens < 1 or args.temperature < 0 or not 0 < args.top_p <= 1:
        raise LmtuneError("--max-new-tokens must be >= 1, --temperature >= 0 (0: greedy) and --top-p in (0, 1]")
    return Sampling(args.max_new_tokens, args.temperature, args.top_p)


def _generate(args: argparse.Namespace) -> int:
    from lmtune.generator import load_lm, read_prompts

    if bool(args.prompt) == bool(args.input):
        raise LmtuneError("generate needs either --prompt \"...\" (repeatable) or --input FILE --output FILE")
    if args.input and not args.output:
        raise LmtuneError("generate --input FILE also needs --output FILE (.jsonl, .json or .csv)")
    if args.output:
        _check_rows_file(Path(args.output))
    sampling = _sampling(args)
    if args.input:
        shown, conversations = read_prompts(args.input, args.prompt_column)
    else:
        shown, conversations = args.prompt, [[{"role": "user", "content": p}] for p in args.prompt]
    if args.system:
        conversations = [[{"role": "system", "content": args.system}, *c] for c in conversations]
    lm = load_lm(args.model, gguf_file=args.gguf_file)
    replies = lm.reply(conversations, sampling, args.batch_size)
    rows = [{"prompt": p, "reply": r} for p, r in zip(shown, replies)]
    if args.output:
        _write_rows(Path(args.output), rows)
        print(f"wrote {len(rows)} replies to {args.output}")
    else:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
    return 0


def _chat(args: argparse.Namespace) -> int:
    from lmtune.generator import load_lm

    sampling = _sampling(args)
    lm = load_lm(args.model, gguf_file=args.gguf_file)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict[str, str]] = []
    print("lmtune chat: type a message; /reset clears the history, /exit (or Ctrl-D) quits.", file=sys.stderr)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if not line.strip():
            continue
        if line.strip() == "/exit":
            return 0
        if line.strip() == "/reset":
            history = []
            print("(history cleared)", file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        print("model> ", end="", flush=True)
        reply = lm.stream_reply(system + history, sampling, lambda text: print(text, end="", flush=True))
        print(flush=True)
        if reply.finish_reason == "length":
            print(f"(the reply was cut at --max-new-tokens {sampling.max_new_tokens}: the model did not end it)", file=sys.stderr)
        history.append({"role": "assistant", "content": reply.text})


def _export(args: argparse.Namespace) -> int:
    from lmtune.inference import export_model

    if args.quantize and args.format != "onnx":
        raise LmtuneError("--quantize int8 applies to --format onnx")
    if args.merge and args.format == "onnx":
        raise LmtuneError("--merge does not apply to --format onnx (an adapter is merged into the ONNX model anyway)")
    if args.output:
        check_creatable(args.output, "--output")
    if args.format == "onnx":
        from lmtune.onnx_export import export_onnx

        target, check = export_onnx(args.run_dir, args.output, quantize=args.quantize)
        print(f"ONNX model written to {target}; against the PyTorch model on {check['check_texts']} check texts: "
              f"largest logit difference {check['max_logit_difference']:.2e}, labels agree {check['labels_agree']:.0%}")
        return 0
    target = export_model(args.run_dir, args.output, merge=args.merge)
    print(f"model written to {target}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from lmtune.inference import merge_adapter

    check_creatable(args.output, "OUTPUT")
    target = merge_adapter(args.adapter, args.output)
    print(f"merged model written to {target}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from lmtune.serve.options import ServeOptions
    from lmtune.serve.server import serve
    from lmtune.serve.tls import check_listening

    key = args.api_key if args.api_key is not None else os.environ.get("LMTUNE_API_KEY")
    options = ServeOptions(**{**option_values(args, ServeOptions), "api_key": key})
    options.check()
    check_listening(args.host, args.ssl_certfile, args.ssl_keyfile, args.insecure, bool(key),
                    "an API key (--api-key or LMTUNE_API_KEY)")
    if args.engine == "vllm":
        from lmtune.serve.vllm import launch_vllm

        launch_vllm(args.model, options)
    serve(args.model, options, gguf_file=args.gguf_file)
    return 0


def _ui(args: argparse.Namespace) -> int:
    from lmtune.serve.tls import check_listening
    from lmtune.ui.options import UiOptions
    from lmtune.ui.server import resolve_token, run_ui

    if args.max_upload_bytes <= 0:
        raise ConfigError(f"--max-upload-bytes must be positive, not {args.max_upload_bytes}")
    token = resolve_token(args.token, args.host)
    check_listening(args.host, args.ssl_certfile, args.ssl_keyfile, args.insecure, bool(token), "a token")
    run_ui(UiOptions(**{**option_values(args, UiOptions), "token": token}, workspace=Path(args.workspace)))
    return 0


def _report(args: argparse.Namespace) -> int:
    from lmtune.report import write_report

    print(f"report written to {write_report(args.run_dir)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from lmtune.demo import run_demo

    check_creatable(args.output_dir, "--output-dir")
    run_demo(args.output_dir, progress=not args.quiet)
    return 0


def option_arguments(parser: argparse.ArgumentParser, options: type) -> None:
    """`--NAME` for each field of an options dataclass that has help, with its default and its help."""
    import dataclasses

    for f in dataclasses.fields(options):
        if "help" in f.metadata and isinstance(f.default, bool):
            parser.add_argument(f"--{f.name.replace('_', '-')}", action="store_true", help=f.metadata["help"])
        elif "help" in f.metadata:
            kind = str if f.default is None else type(f.default)
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, help=f.metadata["help"])


def option_values(args: argparse.Namespace, options: type) -> dict[str, Any]:
    """The parsed values of the options `option_arguments` added, by field name."""
    import dataclasses

    return {f.name: getattr(args, f.name) for f in dataclasses.fields(options) if "help" in f.metadata}


def build_parser() -> argparse.ArgumentParser:
    from lmtune.serve.options import ServeOptions
    from lmtune.ui.options import UiOptions

    parser = argparse.ArgumentParser(prog="lmtune", description="Fine-tune pretrained language models on your own data.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars (they show only on a terminal anyway)")

    p = sub.add_parser("train", parents=[common], help="fine-tune a model as a YAML config says")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.learning_rate=1e-4")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in output.dir (resume=auto)")
    p.add_argument("--allow-changes", action="store_true",
                   help="let the resumed run change epochs, max_steps, learning rates or eval settings")
    p.set_defaults(run=_train)

    p = sub.add_parser("search", parents=[common],
                       help="search hyperparameters (the config's search: section) with Optuna; re-run to add trials")
    p.add_argument("config", help="YAML config file with a search: section")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. search.n_trials=20")
    p.add_argument("--workers", type=int, default=1, help="trials run at once on this machine (processes)")
    p.set_defaults(run=_search)

    p = sub.add_parser("eval", parents=[common], help="score a trained model on a labelled data file")
    p.add_argument("model", help="run folder or saved model folder")
    p.add_argument("--data", required=True, help="data file with the model's text and label columns")
    p.add_argument("--output", help="also write the metrics to this JSON file")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-generate", type=int, help="language models: generate replies for at most N examples (default: all)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="language models: longest generated reply")
    p.set_defaults(run=_eval)

    p = sub.add_parser("predict", parents=[common], help="label texts (or answer questions) with a trained model")
    p.add_argument("model", help="run folder or saved model folder")
    for name, help_text in _predict_inputs().items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, action="append", help=help_text)
    p.add_argument("--input", help="data file with the model's input columns (as in training)")
    p.add_argument("--output", help="where to write predictions (.jsonl, .json or .csv)")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(run=_predict)

    def sampling_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--max-new-tokens", type=int, default=128, help="longest reply, in tokens")
        p.add_argument("--temperature", type=float, default=0.0, help="0: greedy decoding; > 0: sampling")
        p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (with --temperature > 0)")
        p.add_argument("--gguf-file", help="GGUF file name inside MODEL (a folder), for a base model given as GGUF")
        p.add_argument("--system", help="system message placed before every conversation")

    p = sub.add_parser("generate", parents=[common],
                       help="reply to prompts with a causal LM (a run, a model folder or a GGUF model)")
    p.add_argument("model", help="run folder, saved model folder, base model folder or hub id")
    p.add_argument("--prompt", action="append", help="a prompt (repeatable); each is one user message")
    p.add_argument("--input", help="data file of prompts: a 'prompt' column, alpaca 'instruction'/'input', or 'messages'")
    p.add_argument("--prompt-column", default="prompt", help="column of --input that holds the prompt")
    p.add_argument("--output", help="where to write prompts and replies (.jsonl, .json or .csv)")
    p.add_argument("--batch-size", type=int, default=8)
    sampling_options(p)
    p.set_defaults(run=_generate)

    p = sub.add_parser("chat", parents=[common], help="talk to a causal LM in the terminal, with history and streamed replies")
    p.add_argument("model", help="run folder, saved model folder, base model folder or hub id")
    sampling_options(p)
    p.set_defaults(run=_chat)

    p = sub.add_parser("export", parents=[common],
                       help="write a run's model as a folder plain transformers loads (--merge folds in LoRA)")
    p.add_argument("run_dir", metavar="RUN", help="run folder or saved model folder")
    p.add_argument("--output", help="folder to write (default: RUN/merged with --merge, else RUN/export)")
    p.add_argument("--merge", action="store_true", help="merge a LoRA adapter into its base model")
    p.add_argument("--format", choices=["transformers", "onnx"], default="transformers",
                   help="onnx: a classifier for onnxruntime (default folder RUN/onnx), checked against the PyTorch logits")
    p.add_argument("--quantize", choices=["int8"], help="with --format onnx: dynamic int8 weights for CPU serving (RUN/onnx-int8)")
    p.set_defaults(run=_export)

    p = sub.add_parser("merge", parents=[common], help="merge a LoRA adapter into its base model (a plain transformers folder)")
    p.add_argument("adapter", help="run folder or adapter folder")
    p.add_argument("output", help="folder to write the merged model to")
    p.set_defaults(run=_merge)

    p = sub.add_parser("serve", parents=[common], help="serve a model over HTTP: classify, answer, or OpenAI-compatible chat")
    p.add_argument("model", help="run folder, saved model folder, base model folder or hub id")
    option_arguments(p, ServeOptions)
    p.add_argument("--gguf-file", help="GGUF file name inside MODEL (a folder), for a base model given as GGUF")
    p.add_argument("--engine", choices=["lmtune", "vllm"], default="lmtune",
                   help="vllm: run `vllm serve` on a language-model run instead (where vLLM is installed)")
    p.set_defaults(run=_serve)

    p = sub.add_parser("ui", parents=[common], help="a web app: look at data, launch, watch and compare runs")
    option_arguments(p, UiOptions)
    p.add_argument("--workspace", default=".", help="the folder of data files and runs the app works in (default: the current folder)")
    p.set_defaults(run=_ui)

    p = sub.add_parser("report", parents=[common], help="rebuild RUN/report.md and its plots from the run folder's logs")
    p.add_argument("run_dir", metavar="RUN", help="run folder (finished or not)")
    p.set_defaults(run=_report)

    p = sub.add_parser("demo", parents=[common], help="fine-tune a real pretrained encoder on the bundled sentiment sample")
    p.add_argument("--output-dir", default="runs/demo")
    p.set_defaults(run=_demo)
    return parser


def _quiet_libraries() -> None:
    """lmtune reports what matters itself; the libraries' load reports and bars only add noise."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("accelerate", "alembic", "datasets", "httpx", "huggingface_hub", "mlflow", "peft"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may also come after an option (`train c.yaml --quiet train.epochs=1`), which argparse
    # alone does not take for a positional list.
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _quiet_libraries()
    try:
        with quiet(args.quiet):
            return args.run(args)
    except Interrupted as err:
        print(f"lmtune: {err}", file=sys.stderr)
        return err.exit_code
    except LmtuneError as err:
        print(f"lmtune: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("lmtune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
