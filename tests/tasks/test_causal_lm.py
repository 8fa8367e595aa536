"""Causal-LM fine-tuning on tiny models: the loss is the right one, every method trains what it
should, packing changes nothing, a run resumes exactly, and the model learns what it is taught."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lmtune
from conftest import IDENTITY, make_config
from lmtune.config import build_config
from lmtune.data.chat import IGNORE
from lmtune.errors import ConfigError, DataError
from lmtune.eval.generation import Sampling
from lmtune.eval.text_metrics import normalize_answer
from lmtune.tasks.causal_lm import CausalLMTask

DEFAULTS = {
    "model": {"max_length": 64},
    "train": {"epochs": 30, "batch_size": 8, "learning_rate": 1e-2, "seed": 0, "log_every_n_steps": 4, "save_every_n_steps": 1000},
}


def lm_config(model_dir: Path, files: dict[str, Path], out: Path, **sections) -> dict:
    return make_config(model_dir, files, out, "causal_lm", DEFAULTS, **sections)


def task_for(model: Path, data: dict[str, Path], **data_keys) -> tuple[CausalLMTask, torch.nn.Module]:
    from lmtune.models.loading import load_tokenizer

    cfg = build_config(lm_config(model, data, Path("unused"), data=data_keys))
    task = CausalLMTask(cfg)
    task.load_data()
    tokenizer = load_tokenizer(cfg.model)
    net = task.load_model(tokenizer).eval()
    task.prepare_model(net)
    return task, net


# --- the loss --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_loss_reads_only_response_tokens_and_matches_the_models_own_loss(tiny_lms, identity_data, kind):
    task, net = task_for(tiny_lms[kind], identity_data)
    splits = task.encode(task.tokenizer, 64)
    batch = task.collate([splits.train[i] for i in range(4)])
    # The labels are the response and its EOS: decoding the trained tokens gives back the answers.
    for row, (_, answer) in zip(batch["labels"], IDENTITY):
        trained = row[row != IGNORE]
        assert task.tokenizer.decode(trained) == answer + " </s>"
    loss_sum, units = task.loss(net, batch)  # logits only at the trained positions
    reference = net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert units == int((batch["labels"] != IGNORE).sum())
    torch.testing.assert_close(loss_sum / units, reference, rtol=1e-5, atol=1e-6)


def test_train_on_prompt_trains_every_token(tiny_lms, identity_data):
    task, _ = task_for(tiny_lms["llama"], identity_data, train_on_prompt=True)
    splits = task.encode(task.tokenizer, 64)
    item = splits.train[0]
    assert item["target"] == item["input_ids"]


def test_accumulated_micro_batches_weight_every_token_alike(tiny_lms, identity_data):
    """Two micro-batches with different token counts give the gradient of the whole batch."""
    from accelerate import Accelerator

    from lmtune.config import TrainConfig
    from lmtune.train.step import Progress, Stepper

    task, net = task_for(tiny_lms["llama"], identity_data)
    items = [task.encode(task.tokenizer, 64).train[i] for i in range(8)]
    small, large = task.collate(items[:2]), task.collate(items[2:])
    assert task.units(small) != task.units(large)
    grads = []
    for group in ([task.collate(items)], [small, large]):
        net.zero_grad()
        Stepper(net, None, None, task, Accelerator(cpu=True), TrainConfig(), Progress())._forward_backward(group)
        net.eval()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-7)


def test_packed_rows_give_the_loss_of_the_examples_alone(tiny_lms, identity_data):
    task, net = task_for(tiny_lms["llama"], identity_data, packing=True)
    splits = task.encode(task.tokenizer, 64)
    plain, plain_net = task_for(tiny_lms["llama"], identity_data)  # the same weights, loaded again
    examples = plain.encode(plain.tokenizer, 64).train
    assert len(splits.train) < len(examples)  # several examples per row
    packed_sum, packed_units = task.loss(net, task.collate([splits.train[i] for i in range(len(splits.train))]))
    alone_sum, alone_units = plain.loss(plain_net, plain.collate([examples[i] for i in range(len(examples))]))
    assert packed_units == alone_units
    torch.testing.assert_close(packed_sum, alone_sum, rtol=1e-5, atol=1e-4)


# --- training runs ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llama", "llama-chat"])
def test_full_fine_tuning_learns_the_identity_answers(tiny_lms, identity_data, tmp_path, kind):
    result = lmtune.train(lm_config(tiny_lms[kind], identity_data, tmp_path / "run",
                                    eval={"generate": True, "metric": "exact_match", "at_start": True, "max_new_tokens": 16}),
                          progress=False)
    m = result.metrics
    assert m["initial"]["exact_match"] == 0.0
    assert m["exact_match"] == 1.0 and m["perplexity"] < 1.5
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} >= {0, m["steps"]}
    assert all(normalize_answer(s["prediction"]) == normalize_answer(s["reference"]) for s in samples if s["step"] == m["best_step"])
    report = (tmp_path / "run" / "report.md").read_text()  # the report shows the kept model's replies and the perplexity curve
    assert f"## Generated replies (step {m['best_step']})" in report and "plots/metric-perplexity.png" in report
    assert (tmp_path / "run" / "plots" / "metric-perplexity.png").is_file()
    # The saved model answers the same through the Python API and the command line.
    lm = lmtune.load(tmp_path / "run")
    replies = lm.generate([q for q, _ in IDENTITY])
    assert [normalize_answer(r) for r in replies] == [normalize_answer(a) for _, a in IDENTITY]
    done = lm.completions([[{"role": "user", "content": q}] for q, _ in IDENTITY], Sampling(max_new_tokens=48))
    assert all(c.finish_reason == "stop" and c.completion_tokens < 16 for c in done)  # it learned to end its replies
    assert lm.evaluate(str(identity_data["validation"]))["exact_match"] == 1.0


def test_lora_changes_only_the_adapter_and_the_merge_answers_alike(tiny_lms, identity_data, tmp_path):
    from transformers import AutoModelForCausalLM

    from lmtune.inference import export_model

    base = load_file(tiny_lms["llama"] / "model.safetensors")
    result = lmtune.train(lm_config(tiny_lms["llama"], identity_data, tmp_path / "run", method={"name": "lora", "lora_rank": 8},
                                    train={"learning_rate": 3e-2}), progress=False)
    assert result.metrics["trainable_parameters"] < result.metrics["total_parameters"] / 2
    adapter = load_file(tmp_path / "run" / "best" / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)  # the tied head and embeddings stay frozen
    lm = lmtune.load(tmp_path / "run")
    merged_dir = export_model(tmp_path / "run", merge=True)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    ids = lm.tokenizer(lm.prompt_text([{"role": "user", "content": "who are you ?"}]), return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**ids).logits, lm.model(**ids).logits, rtol=1e-4, atol=1e-5)
    for name, value in load_file(merged_dir / "model.safetensors").items():
        if "layers" not in name or "proj" not in name:  # only the adapted projections moved
            assert torch.equal(value, base[name]), name


def test_freeze_trains_only_the_chosen_block(tiny_lms, identity_data, tmp_path):
    base = load_file(tiny_lms["llama"] / "model.safetensors")
    lmtune.train(lm_config(tiny_lms["llama"], identity_data, tmp_path / "run", method={"name": "freeze", "trainable_layers": 1},
                           train={"epochs": 2}), progress=False)
    tuned = load_file(tmp_path / "run" / "final" / "model.safetensors")
    changed = {n for n in base if not torch.equal(base[n], tuned[n])}
    assert changed and all(n.startswith("model.layers.1.") for n in changed)


def test_raw_text_trains_on_blocks_and_holds_out_some(tiny_lms, tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text(" ".join(["the capital of france is paris . the capital of spain is madrid ."] * 40))
    result = lmtune.train(lm_config(tiny_lms["gpt2"], {"train": text, "validation": text}, tmp_path / "run",
                                    data={"validation": None, "validation_split": 0.2}, model={"max_length": 16},
                                    train={"epochs": 8}, eval={"at_start": True}), progress=False)
    assert result.metrics["perplexity"] < result.metrics["initial"]["perplexity"] / 5
    log = (tmp_path / "run" / "train.log").read_text()
    assert "held out" in log and "text blocks" in log


def test_packed_training_equals_unpacked_training_in_loss_per_token(tiny_lms, identity_data, tmp_path):
    """Same data, same steps: with packing the first step's loss is that of the unpacked batch."""
    runs = {}
    for packing in (False, True):
        out = tmp_path / f"run-{packing}"
        lmtune.train(lm_config(tiny_lms["llama"], identity_data, out, data={"packing": packing},
                               train={"epochs": 1, "batch_size": 64, "log_every_n_steps": 1}), progress=False)
        runs[packing] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = {p: next(r for r in runs[p] if r["type"] == "train") for p in runs}
    assert first[True]["loss"] == pytest.approx(first[False]["loss"], rel=1e-5)


def resume_from(cfg: dict, ref: Path, resumed: Path, step: int) -> Path:
    """Resume in `resumed` what a run of `cfg` killed right after checkpoint `step` would leave of `ref`'s folder."""
    (resumed / "checkpoints").mkdir(parents=True)
    state = json.loads((ref / "checkpoints" / f"step-{step}" / "state.json").read_text())
    for kept in {step, state["best"]["step"]}:
        shutil.copytree(ref / "checkpoints" / f"step-{kept}", resumed / "checkpoints" / f"step-{kept}")
    shutil.copy(ref / "config.yaml", resumed / "config.yaml")
    lmtune.train({**cfg, "resume": "auto", "output": {"dir": str(resumed)}}, progress=False)
    return resumed


def test_resume_mid_run_equals_the_uninterrupted_run(tiny_lms, identity_data, tmp_path):
    cfg = lm_config(tiny_lms["llama"], identity_data, tmp_path / "ref", method={"name": "lora"},
                    train={"epochs": 3, "save_every_n_steps": 1, "keep_last_checkpoints": 100, "log_every_n_steps": 1})
    lmtune.train(cfg, progress=False)
    resumed = resume_from(cfg, tmp_path / "ref", tmp_path / "resumed", 5)
    for name in ("metrics.jsonl",):
        a = [r for r in map(json.loads, (tmp_path / "ref" / name).read_text().splitlines()) if r["type"] == "train"]
        b = [r for r in map(json.loads, (resumed / name).read_text().splitlines()) if r["type"] == "train"]
        assert [(r["step"], r["loss"]) for r in a] == [(r["step"], r["loss"]) for r in b]
    wa = load_file(tmp_path / "ref" / "final" / "adapter_model.safetensors")
    wb = load_file(resumed / "final" / "adapter_model.safetensors")
    assert all(torch.equal(wa[n], wb[n]) for n in wa)


# --- bad input -------------------------------------------------------------------------------


def test_bad_generative_settings_are_refused_before_anything_is_written(tiny_lms, identity_data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="exact_match and f1 need eval.generate"):
        lmtune.train(lm_config(tiny_lms["llama"], identity_data, out, eval={"metric": "exact_match"}), progress=False)
    with pytest.raises(ConfigError, match="does not fit task causal_lm"):
        lmtune.train(lm_config(tiny_lms["llama"], identity_data, out, train={"loss": "mse"}), progress=False)
    text = tmp_path / "doc.txt"
    text.write_text("the capital of france is paris .")
    with pytest.raises(ConfigError, match="eval.generate needs prompts"):
        lmtune.train(lm_config(tiny_lms["llama"], {"train": text, "validation": text}, out, eval={"generate": True}), progress=False)
    with pytest.raises(ConfigError, match="applies to task causal_lm and translation, not to task classification"):
        lmtune.train({**lm_config(tiny_lms["llama"], identity_data, out, data={"packing": True}), "task": "classification"}, progress=False)
    assert not out.exists()


def test_bad_conversation_rows_name_file_and_row(tiny_lms, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n"
                   + json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl: line 2: the conversation has no assistant message"):
        lmtune.train(lm_config(tiny_lms["llama"], {"train": bad, "validation": bad}, tmp_path / "run"), progress=False)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("question,reply\nhi,hello\n")
    with pytest.raises(DataError, match="cannot tell the data format"):
        lmtune.train(lm_config(tiny_lms["llama"], {"train": unknown, "validation": unknown}, tmp_path / "run"), progress=False)
    # ... which data.columns fixes
    result = lmtune.train(lm_config(tiny_lms["llama"], {"train": unknown, "validation": unknown}, tmp_path / "run",
                                    data={"format": "alpaca", "columns": {"instruction": "question", "output": "reply"}},
                                    train={"epochs": 1}), progress=False)
    assert result.metrics["steps"] == 1


def test_examples_without_a_response_token_left_are_dropped_with_a_warning(tiny_lms, tmp_path, caplog):
    rows = [{"instruction": "who are you ? " * 20, "output": "i am zorblat ."}, {"instruction": "hi", "output": "hello ."}]
    data = tmp_path / "d.json"
    data.write_text(json.dumps(rows))
    with caplog.at_level("WARNING", logger="lmtune"):
        result = lmtune.train(lm_config(tiny_lms["llama"], {"train": data, "validation": data}, tmp_path / "run",
                                        model={"max_length": 24}, train={"epochs": 1}), progress=False)
    assert "1 of 2 examples have no response token left" in caplog.text
    assert "a reply cut short loses its end token" in caplog.text  # the model would learn not to stop
    assert result.metrics["steps"] == 1


@pytest.mark.parametrize("kind", ["llama-chat", "llama", "gpt2"])  # the tokenizer's chat template; lmtune's plain one
def test_the_prompt_ids_of_chat_and_serve_are_those_training_built(tiny_lms, tmp_path, kind):
    """For every assistant turn of a training conversation, the ids before its first trained token equal
    `Generator.prompt_ids` of the messages before it (what `lmtune chat`, `serve` and `reply` give the
    model), with the run's system prompt added in both."""
    conversations = [
        [{"role": "user", "content": "who are you ?"}, {"role": "assistant", "content": "i am zorblat ."},
         {"role": "user", "content": "what is your name ?"}, {"role": "assistant", "content": "my name is zorblat ."}],
        [{"role": "system", "content": "answer briefly ."}, {"role": "user", "content": "hello"},
         {"role": "assistant", "content": "hello , i am zorblat ."}],
    ]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations))
    system = "you are a helpful assistant ."
    lmtune.train(lm_config(tiny_lms[kind], {"train": data, "validation": data}, tmp_path / "run",
                           data={"system_prompt": system}, train={"epochs": 1}, eval={"generate": False}), progress=False)
    lm = lmtune.load(tmp_path / "run")
    task, _ = task_for(tiny_lms[kind], {"train": data, "validation": data}, system_prompt=system)
    splits = task.encode(task.tokenizer, 64)
    for i, messages in enumerate(conversations):
        item = splits.train[i]
        ids, labels = item["input_ids"], item["target"]
        starts = [k for k in range(1, len(labels)) if labels[k] != IGNORE and labels[k - 1] == IGNORE]
        turns = [t for t, m in enumerate(messages) if m["role"] == "assistant"]
        assert len(starts) == len(turns)
        for start, turn in zip(starts, turns):
            assert ids[:start] == lm.prompt_ids(messages[:turn]), (kind, i, turn)


def test_a_streamed_corpus_trains_and_resumes_exactly(tiny_lms, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["the capital of france is paris . the capital of spain is madrid ."] * 30) + "\n")
    cfg = lm_config(tiny_lms["gpt2"], {"train": corpus, "validation": corpus}, tmp_path / "ref",
                    data={"validation": None, "validation_split": 0.2, "streaming": True}, model={"max_length": 16},
                    train={"epochs": 2, "save_every_n_steps": 1, "keep_last_checkpoints": 100, "log_every_n_steps": 1})
    lmtune.train(cfg, progress=False)
    resumed = resume_from(cfg, tmp_path / "ref", tmp_path / "resumed", 3)
    a = [r for r in map(json.loads, (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()) if r["type"] == "train"]
    b = [r for r in map(json.loads, (resumed / "metrics.jsonl").read_text().splitlines()) if r["type"] == "train"]
    assert len(a) >= 6 and [(r["step"], r["loss"]) for r in a] == [(r["step"], r["loss"]) for r in b]
    wa, wb = load_file(tmp_path / "ref" / "final" / "model.safetensors"), load_file(resumed / "final" / "model.safetensors")
    assert all(torch.equal(wa[n], wb[n]) for n in wa)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_a_fused_output_layer_loss_gets_the_hidden_states_and_gives_the_same_loss_and_gradients(tiny_lms, identity_data, smoothing):
    """train.liger_kernel's fused linear cross-entropy is handed the (N, hidden) states of the target positions.

    Liger's kernel itself needs CUDA (the GPU check runs it); here a reference in plain torch
    stands in for it, to check what lmtune gives it and what it does with the result.
    """
    import torch.nn.functional as F

    task, net = task_for(tiny_lms["llama"], identity_data)
    task.cfg.train.label_smoothing = smoothing
    splits = task.encode(task.tokenizer, 64)
    batch = task.collate([splits.train[i] for i in range(4)])
    given = []

    def reference(weight, hidden, targets, bias):
        given.append(hidden.shape)
        logits = F.linear(hidden, weight, bias)
        return F.cross_entropy(logits.float(), targets, reduction="sum", label_smoothing=smoothing)

    def loss_and_grads(fused):
        task.fused_loss = fused
        net.zero_grad()
        loss, n = task.loss(net, batch)
        loss.backward()
        return loss.detach(), n, {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}

    plain, n_plain, g_plain = loss_and_grads(None)
    fused, n_fused, g_fused = loss_and_grads(reference)
    assert given == [(n_fused, net.config.hidden_size)] and n_fused == n_plain
    torch.testing.assert_close(fused, plain)
    assert g_fused.keys() == g_plain.keys()
    for name in g_plain:
        torch.testing.assert_close(g_fused[name], g_plain[name], msg=name)
    # the output layer is itself again afterwards: plain use gets vocabulary logits at every position
    task.fused_loss = None
    assert net(input_ids=batch["input_ids"]).logits.shape[-1] == net.config.vocab_size


def test_the_fused_loss_is_kept_for_plain_linear_output_layers(tiny_lms, identity_data):
    from types import SimpleNamespace

    from lmtune.models.kernels import fused_linear_cross_entropy

    _, net = task_for(tiny_lms["llama"], identity_data)
    head = net.get_output_embeddings()
    assert fused_linear_cross_entropy(torch.nn.Sequential(head), net.config, 0.0) is None  # an adapter's wrapper
    assert fused_linear_cross_entropy(head, SimpleNamespace(final_logit_softcapping=30.0), 0.0) is None  # logits changed after it
