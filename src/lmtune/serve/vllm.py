"""`lmtune serve --engine vllm`: the `vllm serve` command for a run's language model, and its launch.

vLLM (on a CUDA machine) serves a full or merged model folder as it is, and a LoRA run as its
base model plus the adapter folder (`--enable-lora --lora-modules NAME=FOLDER`): clients ask for
NAME and get the adapter, without merging. lmtune saves both layouts as vLLM reads them: a
model folder with config.json, safetensors weights and the tokenizer; an adapter folder with
adapter_config.json and adapter_model.safetensors.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lmtune.errors import LmtuneError
from lmtune.models.saving import read_meta
from lmtune.run_dir import resolve_model_dir
from lmtune.serve.options import ServeOptions
from lmtune.tasks import DEFAULT_TASK, TASKS

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the --max-lora-rank values vLLM accepts


def vllm_command(path: str, options: ServeOptions) -> list[str]:
    """`vllm serve ...` for an lmtune run or model folder of a decoder-only language model."""
    folder = resolve_model_dir(path)
    meta = read_meta(folder)
    task = meta.get("task", DEFAULT_TASK)
    if task not in TASKS or TASKS[task].predict_endpoint or meta.get("seq2seq"):  # a task with an endpoint does not generate text
        raise LmtuneError(f"{folder} holds a {'encoder-decoder ' if meta.get('seq2seq') else ''}{task} model; --engine vllm "
                          f"serves decoder-only language models: serve it with lmtune's own engine (leave out --engine)")
    name = options.model_name or Path(path).resolve().name
    if meta.get("adapter"):
        base = meta["base_model"]
        if base.get("gguf_file"):
            raise LmtuneError(f"{folder} is an adapter on the GGUF file {base['gguf_file']}, which vLLM cannot take as a LoRA "
                              f"base; merge it first (lmtune export {path} --merge) and serve RUN/merged with --engine vllm")
        rank = int(json.loads((folder / "adapter_config.json").read_text())["r"])
        max_rank = next((r for r in LORA_RANKS if r >= rank), None)
        if max_rank is None:
            raise LmtuneError(f"{folder}: LoRA rank {rank} is over the largest vLLM serves ({LORA_RANKS[-1]})")
        cmd = ["vllm", "serve", str(base["name_or_path"]), "--enable-lora", "--lora-modules", f"{name}={folder}",
               "--max-lora-rank", str(max_rank)]
    else:
        cmd = ["vllm", "serve", str(folder), "--served-model-name", name]
    cmd += ["--host", options.host, "--port", str(options.port)]
    if options.api_key:
        cmd += ["--api-key", options.api_key]
    if options.ssl_certfile and options.ssl_keyfile:  # vLLM's server takes the same TLS options
        cmd += ["--ssl-certfile", options.ssl_certfile, "--ssl-keyfile", options.ssl_keyfile]
    return cmd


def launch_vllm(path: str, options: ServeOptions) -> None:
    """Replace this process with `vllm serve` (it handles SIGTERM itself)."""
    options.check()
    cmd = vllm_command(path, options)
    if shutil.which("vllm") is None:
        raise LmtuneError("--engine vllm needs vLLM, which is not installed here (pip install vllm, on a machine with a "
                          "CUDA GPU); the command it would run: " + " ".join(cmd))
    os.execvp(cmd[0], cmd)
