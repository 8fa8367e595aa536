"""Sequence packing: packed rows give each example exactly the loss it has alone, on tiny random models."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
import transformers

from lmtune.data.packing import (
    IGNORE_INDEX,
    PACKING_MODEL_TYPES,
    collate_packed,
    pack,
    packing_unsupported_reason,
    supports_packing,
)

VOCAB = 50
PAD = 0
SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             bos_token_id=None, eos_token_id=None, pad_token_id=None)
KV = dict(num_key_value_heads=2)

# model_type -> tiny config; sliding-window variants use a window shorter than the examples, so the
# window must be measured within each example.
CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**SMALL, **KV),
    "mistral": lambda: transformers.MistralConfig(**SMALL, **KV, sliding_window=None),
    "mistral-window": lambda: transformers.MistralConfig(**SMALL, **KV, sliding_window=3),
    "qwen2": lambda: transformers.Qwen2Config(**SMALL, **KV),
    "qwen2-window": lambda: transformers.Qwen2Config(**SMALL, **KV, use_sliding_window=True, sliding_window=3,
                                                     max_window_layers=0),
    "qwen3": lambda: transformers.Qwen3Config(**SMALL, **KV, head_dim=8),
    "gemma": lambda: transformers.GemmaConfig(**SMALL, **KV, head_dim=8),
    "phi": lambda: transformers.PhiConfig(**SMALL),
    "phi3": lambda: transformers.Phi3Config(**SMALL, **KV),
    "gpt2": lambda: transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                            bos_token_id=None, eos_token_id=None),
    "gpt_neox": lambda: transformers.GPTNeoXConfig(**SMALL),
    "granite": lambda: transformers.GraniteConfig(**SMALL, **KV),
    "olmo2": lambda: transformers.Olmo2Config(**SMALL, **KV),
    "smollm3": lambda: transformers.SmolLM3Config(**SMALL, **KV),
    "starcoder2": lambda: transformers.Starcoder2Config(**SMALL, **KV, sliding_window=None),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: extra threads only contend with other work on the machine (seconds, not tens)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(name: str, attn: str) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS[name](), attn_implementation=attn)
    return model.eval()  # no dropout: packed and unpacked must be the same computation


def make_examples(lengths: list[int], seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Distinct random examples; the first third of each is a prompt (label -100), as in chat data."""
    rng = random.Random(seed)
    out = []
    for n in lengths:
        ids = [rng.randrange(1, VOCAB) for _ in range(n)]
        labels = [IGNORE_INDEX] * (n // 3) + ids[n // 3 :]
        out.append((ids, labels))
    assert len({tuple(ids) for ids, _ in out}) == len(out)
    return out


EXAMPLES = make_examples([9, 7, 6, 5, 4, 4, 3, 2, 1])
MAX_LENGTH = 12


def summed_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Shifted cross-entropy summed over targets != -100; logits (T, V), labels (T,)."""
    return F.cross_entropy(logits[:-1].float(), labels[1:], ignore_index=IGNORE_INDEX, reduction="sum")


def segments(rows: list[dict[str, list[int]]]):
    """(row index, start, end) of every packed example, in row order."""
    for b, row in enumerate(rows):
        start = 0
        for n in row["lengths"]:
            yield b, start, start + n
            start += n


@torch.no_grad()
def losses_alone(model) -> dict[tuple[int, ...], float]:
    out = {}
    for ids, labels in EXAMPLES:
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]  # (T, V)
        out[tuple(ids)] = summed_loss(logits, torch.tensor(labels)).item()
    return out


@torch.no_grad()
def losses_packed(model, **overrides) -> tuple[dict[tuple[int, ...], float], torch.Tensor, dict]:
    """Per-example summed losses read from one packed batch, plus the batch logits and inputs."""
    rows = pack(EXAMPLES, MAX_LENGTH)
    batch = collate_packed(rows, pad_token_id=PAD)
    inputs = {**batch, "use_cache": False, **overrides}
    inputs = {k: v for k, v in inputs.items() if v is not None and k != "labels"}
    logits = model(**inputs).logits  # (B, T, V)
    out = {}
    for b, start, end in segments(rows):
        ids = tuple(rows[b]["input_ids"][start:end])
        out[ids] = summed_loss(logits[b, start:end], batch["labels"][b, start:end]).item()
    return out, logits, batch


# ---------------------------------------------------------------- packed == alone, per model family


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_packed_loss_equals_unpacked(name, attn):
    model = tiny_model(name, attn)
    assert supports_packing(model.config), packing_unsupported_reason(model.config)
    alone = losses_alone(model)
    packed, logits, batch = losses_packed(model)
    assert packed.keys() == alone.keys()
    for ids in alone:
        assert packed[ids] == pytest.approx(alone[ids], abs=1e-5), ids
    # The loss over whole rows (what training computes) is the sum of the examples' losses: no
    # target crosses an example boundary, and the pad tail adds nothing.
    _, _, V = logits.shape
    total = F.cross_entropy(logits[:, :-1].reshape(-1, V), batch["labels"][:, 1:].reshape(-1),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    assert total.item() == pytest.approx(sum(alone.values()), abs=1e-4)


def test_every_claimed_family_is_tested():
    assert {CONFIGS[name]().model_type for name in CONFIGS} >= PACKING_MODEL_TYPES


def test_model_builtin_loss_matches():
    """Passing labels to the model (its own shift and mean) gives the mean over all examples' targets."""
    model = tiny_model("llama", "sdpa")
    alone = losses_alone(model)
    targets = sum(sum(1 for t in labels[1:] if t != IGNORE_INDEX) for _, labels in EXAMPLES)
    with torch.no_grad():
        loss = model(**collate_packed(pack(EXAMPLES, MAX_LENGTH), PAD), use_cache=False).loss
    assert loss.item() == pytest.approx(sum(alone.values()) / targets, abs=1e-6)


# ---------------------------------------------------------------- negative: what breaks the isolation


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("breakage", ["plain positions", "attention mask of ones", "kv cache on"])
def test_isolation_breaks_without_the_rules(breakage, attn):
    model = tiny_model("llama", attn)
    alone = losses_alone(model)
    rows = pack(EXAMPLES, MAX_LENGTH)
    B, T = len(rows), max(len(r["input_ids"]) for r in rows)
    overrides = {
        "plain positions": {"position_ids": torch.arange(T).expand(B, T)},
        "attention mask of ones": {"attention_mask": torch.ones(B, T, dtype=torch.long)},
        "kv cache on": {"use_cache": True},  # the config default: a cache turns packed detection off
    }[breakage]
    packed, _, _ = losses_packed(model, **overrides)
    firsts = {tuple(r["input_ids"][:n]) for r in rows for n in r["lengths"][:1]}
    later = [ids for ids in alone if ids not in firsts and len(ids) > 1]  # examples that follow another
    assert later
    assert max(abs(packed[ids] - alone[ids]) for ids in later) > 1e-3


# ---------------------------------------------------------------- pack() itself


def test_rows_respect_max_length_and_keep_every_example_once():
    rows = pack(EXAMPLES, MAX_LENGTH)
    labels_of = {tuple(ids): labels for ids, labels in EXAMPLES}
    seen = []
    for row in rows:
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["position_ids"]) == sum(row["lengths"])
        assert sum(row["lengths"]) <= MAX_LENGTH
    for b, start, end in segments(rows):
        row = rows[b]
        ids = row["input_ids"][start:end]
        seen.append(tuple(ids))
        assert row["position_ids"][start:end] == list(range(end - start))
        assert row["labels"][start:end] == [IGNORE_INDEX] + labels_of[tuple(ids)][1:]
    assert sorted(seen) == sorted(tuple(ids) for ids, _ in EXAMPLES)
    assert sum(len(r["input_ids"]) for r in rows) == sum(len(ids) for ids, _ in EXAMPLES)


def test_boundary_targets_are_not_counted():
    """After the shift, no token is trained to predict the first token of the next example."""
    rows = pack(EXAMPLES, MAX_LENGTH)
    for b, start, _ in segments(rows):
        assert rows[b]["labels"][start] == IGNORE_INDEX
    batch = collate_packed(rows, PAD)
    targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert targets == sum(sum(1 for t in labels[1:] if t != IGNORE_INDEX) for _, labels in EXAMPLES)


def test_first_fit_decreasing_is_deterministic():
    examples = make_examples([2, 6, 3, 5, 4])
    rows = pack(examples, 8)
    assert [row["lengths"] for row in rows] == [[6, 2], [5, 3], [4]]
    assert pack(examples, 8) == rows
    # ties keep input order
    same = make_examples([3, 3, 3], seed=1)
    assert [r["input_ids"] for r in pack(same, 6)] == [same[0][0] + same[1][0], same[2][0]]


def test_first_fit_matches_a_naive_reference():
    rng = random.Random(3)
    lengths = [rng.randint(1, 64) for _ in range(500)]
    examples = [([1] * n, [1] * n) for n in lengths]
    bins: list[list[int]] = []
    for n in sorted(lengths, reverse=True):
        for b in bins:
            if sum(b) + n <= 64:
                b.append(n)
                break
        else:
            bins.append([n])
    assert [r["lengths"] for r in pack(examples, 64)] == bins


@pytest.mark.parametrize("bad, message", [
    ([([1] * 13, [1] * 13)], "more than max_length"),
    ([([1, 2], [1])], "labels"),
    ([([], [])], "empty"),
])
def test_bad_examples_raise(bad, message):
    with pytest.raises(ValueError, match=message):
        pack(make_examples([3]) + bad, MAX_LENGTH)


# ---------------------------------------------------------------- collate and support checks


def test_collate_pads_as_a_separate_sequence():
    rows = pack(make_examples([5, 4, 3]), 9)  # rows [5, 4] and [3]
    batch = collate_packed(rows, pad_token_id=PAD)
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # no attention_mask, on purpose
    assert batch["input_ids"].shape == (2, 9)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3], [0, 1, 2, 0, 1, 2, 3, 4, 5]]
    assert batch["input_ids"][1, 3:].tolist() == [PAD] * 6
    assert batch["labels"][1, 3:].tolist() == [IGNORE_INDEX] * 6


def test_supports_packing():
    assert supports_packing(transformers.LlamaConfig(**SMALL, **KV))  # not bound to a model yet: sdpa
    opt = transformers.OPTConfig(vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                 num_attention_heads=4, word_embed_proj_dim=32)
    assert not supports_packing(opt)
    assert "'opt'" in packing_unsupported_reason(opt)
    flash = transformers.LlamaConfig(**SMALL, **KV)
    flash._attn_implementation = "flash_attention_2"
    assert "sdpa" in packing_unsupported_reason(flash)
