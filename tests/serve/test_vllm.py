"""`--engine vllm`: the folders lmtune saves are laid out as `vllm serve` reads them, and the command
names the right ones. vLLM itself needs a CUDA GPU; nothing here imports it."""

from __future__ import annotations

import json

from safetensors import safe_open

from lmtune.cli import main
from lmtune.inference import export_model
from lmtune.serve.options import ServeOptions
from lmtune.serve.vllm import vllm_command


def test_a_lora_run_is_served_as_base_plus_adapter(chat_run):
    adapter = chat_run / "best"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8 and config["target_modules"]
    assert not config.get("modules_to_save")  # vLLM loads LoRA weights only
    base = config["base_model_name_or_path"]
    assert (json.loads((chat_run / "best" / "lmtune.json").read_text())["base_model"]["name_or_path"]) == base
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names and all(n.startswith("base_model.model.") and (".lora_A." in n or ".lora_B." in n) for n in names)
    cmd = vllm_command(str(chat_run), ServeOptions(port=9000, api_key="k"))
    assert cmd[:3] == ["vllm", "serve", base]
    assert cmd[cmd.index("--lora-modules") + 1] == f"identity={adapter}" and cmd[cmd.index("--max-lora-rank") + 1] == "8"
    assert cmd[cmd.index("--port") + 1] == "9000" and cmd[cmd.index("--api-key") + 1] == "k"
    assert "--ssl-certfile" not in cmd
    tls = vllm_command(str(chat_run), ServeOptions(ssl_certfile="c.pem", ssl_keyfile="k.pem"))
    assert tls[tls.index("--ssl-certfile") + 1] == "c.pem" and tls[tls.index("--ssl-keyfile") + 1] == "k.pem"


def test_a_merged_run_is_a_plain_model_folder(chat_run, tmp_path):
    merged = export_model(chat_run, tmp_path / "merged", merge=True)
    config = json.loads((merged / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    template = (merged / "chat_template.jinja").read_text() if (merged / "chat_template.jinja").is_file() else \
        json.loads((merged / "tokenizer_config.json").read_text()).get("chat_template")
    assert template and "add_generation_prompt" in template  # vLLM's chat endpoint renders with it
    assert not list(merged.glob("adapter_*"))
    cmd = vllm_command(str(merged), ServeOptions(model_name="zorblat"))
    assert cmd[:3] == ["vllm", "serve", str(merged)] and cmd[cmd.index("--served-model-name") + 1] == "zorblat"


def test_without_vllm_or_for_a_classifier_it_is_a_clear_error(chat_run, classifier_run, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no vllm on the PATH
    assert main(["serve", str(chat_run), "--engine", "vllm"]) == 2
    err = capsys.readouterr().err
    assert "needs vLLM" in err and "vllm serve" in err and "--enable-lora" in err
    assert main(["serve", str(classifier_run), "--engine", "vllm"]) == 2
    assert "serves decoder-only language models" in capsys.readouterr().err
