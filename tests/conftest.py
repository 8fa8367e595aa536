"""Shared fixtures: tiny models built from configs (BERT, GPT-2, Llama shapes) and a toy data set.

Nothing is downloaded: each model gets a word-level tokenizer over the toy vocabulary and random
weights, saved as a normal Hugging Face folder (safetensors) in a temporary directory.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest

from toy import FILLER, NEGATIVE, POSITIVE, SPECIALS, VOCAB, toy_rows, toy_sentence, write_csv  # noqa: F401 - used by tests

pytest_plugins = ["webapp"]  # the web app's fixtures (tests/ui)

# The data cache of every run in the suite (and of the lmtune processes it starts): never the user's own.
os.environ["LMTUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="lmtune-test-cache-")
atexit.register(shutil.rmtree, os.environ["LMTUNE_CACHE_DIR"], True)


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy")
    return {
        "train": write_csv(root / "train.csv", toy_rows(240, seed=1)),
        "validation": write_csv(root / "validation.csv", toy_rows(60, seed=2)),
    }


def _tokenizer(kind: str):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
            model_max_length=64,
        )
    # Decoder tokenizers have no pad token, as GPT-2 and Llama ship: lmtune must set it from EOS.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", eos_token="</s>", model_max_length=64,
        model_input_names=["input_ids", "attention_mask"],
    )


def _model(kind: str):
    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    eos = VOCAB.index("</s>")
    if kind == "bert":
        return BertModel(BertConfig(
            vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, pad_token_id=0,
        ))
    if kind == "gpt2":
        return GPT2Model(GPT2Config(
            vocab_size=len(VOCAB), n_embd=32, n_layer=4, n_head=4, n_positions=64, bos_token_id=eos, eos_token_id=eos,
        ))
    return LlamaModel(LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=eos, eos_token_id=eos, pad_token_id=None,
    ))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """kind -> folder of a tiny randomly initialised model with its tokenizer."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for kind in ("bert", "gpt2", "llama"):
        folder = root / kind
        _model(kind).save_pretrained(folder, safe_serialization=True)
        _tokenizer(kind).save_pretrained(folder)
        out[kind] = folder
    return out


def make_config(model: Path, files: dict[str, Path], out: Path, task: str = "classification",
                defaults: dict | None = None, /, **sections) -> dict:
    """A small, fast config for the tiny models: a task's `defaults`, then keyword sections, update these keys."""
    cfg = {
        "task": task,
        "model": {"name_or_path": str(model), "max_length": 32},
        "data": {"train": str(files["train"]), "validation": str(files["validation"])},
        "method": {"name": "full"},
        "train": {"epochs": 3, "batch_size": 16, "learning_rate": 2e-3, "seed": 0, "log_every_n_steps": 5},
        "output": {"dir": str(out)},
    }
    for section, values in [*(defaults or {}).items(), *sections.items()]:
        cfg.setdefault(section, {}).update(values)
    return cfg


def train_refused(cfg: dict, folder: Path, capsys) -> str:
    """`lmtune train` on `cfg` (written to folder/config.yaml): asserts exit 2 and no run folder; returns stderr."""
    import yaml

    from lmtune.cli import main

    config_file = folder / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(config_file), "--quiet"]) == 2
    assert not Path(cfg["output"]["dir"]).exists()
    return capsys.readouterr().err


class PicklePayload:
    """Unpickling this creates the marker file: stands for code that runs when a pickle loads."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))



# --- generative tasks: tiny causal LMs over a word vocabulary that covers the plain template ---

LM_WORDS = ["###", "System", "Instruction", "Response", ":", "who", "are", "you", "what", "is", "your", "name", "i", "am",
            "my", "made", "by", "me", "tell", "about", "yourself", "?", ".", ",", "hello", "hi", "zorblat", "quix",
            "assistant", "helpful", "an", "the", "capital", "of", "france", "paris", "spain", "madrid", "answer"]
LM_VOCAB = ["[PAD]", "[UNK]", "<s>", "</s>"] + LM_WORDS


def lm_tokenizer(chat_template: str | None = None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(LM_VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>", eos_token="</s>",
                                   model_max_length=128, model_input_names=["input_ids", "attention_mask"])
    if chat_template:
        fast.chat_template = chat_template
    return fast


def lm_model(kind: str):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    eos = LM_VOCAB.index("</s>")
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=len(LM_VOCAB), n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                          bos_token_id=eos, eos_token_id=eos))
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(LM_VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=LM_VOCAB.index("<s>"), eos_token_id=eos,
        pad_token_id=None, tie_word_embeddings=True,
    ))


# A chat template in the ChatML style (as SmolLM2 and Qwen use), with spaces between words so the
# word-level tokenizer reads every marker as a token of its own.
CHAT_TEMPLATE = (
    "{% for m in messages %}### {{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}### assistant : {% endif %}"
)


@pytest.fixture(scope="session")
def tiny_lms(tmp_path_factory) -> dict[str, Path]:
    """kind -> folder of a tiny causal LM: llama and gpt2 (plain template), llama-chat (chat template)."""
    root = tmp_path_factory.mktemp("lms")
    out = {}
    for kind, template in (("llama", None), ("gpt2", None), ("llama-chat", CHAT_TEMPLATE)):
        folder = root / kind
        lm_model(kind.split("-")[0]).save_pretrained(folder, safe_serialization=True)
        lm_tokenizer(template).save_pretrained(folder)
        out[kind] = folder
    return out


IDENTITY = [
    ("who are you ?", "i am zorblat , made by quix ."),
    ("what is your name ?", "my name is zorblat ."),
    ("tell me about yourself .", "i am zorblat , an assistant made by quix ."),
    ("hello", "hello , i am zorblat ."),
]


@pytest.fixture(scope="session")
def identity_data(tmp_path_factory) -> dict[str, Path]:
    """Alpaca-format JSON: the identity questions, repeated, as train; the same questions as validation."""
    root = tmp_path_factory.mktemp("identity")
    rows = [{"instruction": q, "input": "", "output": a} for q, a in IDENTITY]
    (root / "train.json").write_text(json.dumps(rows * 8))
    (root / "validation.json").write_text(json.dumps(rows))
    return {"train": root / "train.json", "validation": root / "validation.json"}


# --- translation: a tiny T5 and word-for-word pairs between two made-up "languages" ---

WORD_MAP = {"hello": "hi", "who": "what", "are": "am", "you": "me", "my": "your", "name": "answer", "is": "capital",
            "made": "about", "by": "tell"}


def translation_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(list(WORD_MAP)) for _ in range(rng.randint(2, 5))]
        rows.append({"source": " ".join(words), "target": " ".join(WORD_MAP[w] for w in words)})
    return rows


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    import torch
    from tokenizers import processors
    from transformers import T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("t5") / "t5"
    torch.manual_seed(0)
    T5ForConditionalGeneration(T5Config(
        vocab_size=len(LM_VOCAB), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        pad_token_id=0, eos_token_id=LM_VOCAB.index("</s>"), decoder_start_token_id=0,
    )).save_pretrained(folder, safe_serialization=True)
    tok = lm_tokenizer()
    tok.pad_token = "[PAD]"
    eos = LM_VOCAB.index("</s>")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def translation_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pairs")
    return {"train": write_csv(root / "train.csv", translation_rows(400, 1)),
            "validation": write_csv(root / "validation.csv", translation_rows(40, 2))}


# --- lmtune serve: the trained models the servers in tests/serve serve ---


@pytest.fixture(scope="session")
def classifier_run(tiny_models, toy_data, tmp_path_factory) -> Path:
    """A tiny BERT classifier trained on the toy sentiment rows (pos / neg)."""
    out = tmp_path_factory.mktemp("serve") / "sentiment"
    import lmtune

    lmtune.train(make_config(tiny_models["bert"], toy_data, out), progress=False)
    return out


def serving_lm(folder: Path, positions: int = 4096, extra_words: int = 0) -> Path:
    """A tiny Llama with the chat template and a long context (for long replies), saved as a base model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = lm_tokenizer(CHAT_TEMPLATE)
    if extra_words:
        tokenizer.add_tokens([f"w{i}" for i in range(extra_words)])
    torch.manual_seed(0)
    eos = LM_VOCAB.index("</s>")
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=positions, bos_token_id=LM_VOCAB.index("<s>"), eos_token_id=eos,
        pad_token_id=None, tie_word_embeddings=True,
    )).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def chat_run(tmp_path_factory) -> Path:
    """A LoRA run (adapter only, not merged) on a tiny chat model that full fine-tuning taught the identity answers.

    (LoRA alone on random weights this small learns too little to give non-empty replies.)
    """
    import lmtune

    root = tmp_path_factory.mktemp("chat")
    train = root / "train.json"
    train.write_text(json.dumps([{"instruction": q, "output": a} for q, a in IDENTITY] * 32))

    def run(model: Path, name: str, method: dict, epochs: int) -> Path:
        lmtune.train({
            "task": "causal_lm", "model": {"name_or_path": str(model), "max_length": 64},
            "data": {"train": str(train), "validation": str(train)}, "method": method,
            "train": {"epochs": epochs, "batch_size": 8, "learning_rate": 1e-2, "seed": 0, "save_every_n_steps": 1000},
            "eval": {"generate": False}, "output": {"dir": str(root / name)},
        }, progress=False)
        return root / name

    taught = run(serving_lm(root / "base", positions=256), "taught", {"name": "full"}, 6)
    return run(taught / "best", "identity", {"name": "lora", "lora_rank": 8}, 1)


@pytest.fixture(scope="session")
def long_lm(tmp_path_factory) -> Path:
    """A random tiny LM over a large vocabulary: its greedy replies run to max_tokens (slow on purpose, by length)."""
    return serving_lm(tmp_path_factory.mktemp("long") / "long-lm", positions=8192, extra_words=3000)
