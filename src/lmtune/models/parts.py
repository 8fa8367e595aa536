"""Find the parts of a transformer by structure: its block list, embeddings and task head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmtune.errors import ModelError

HEAD_NAMES = ("classifier", "score", "pre_classifier", "pooler")


@dataclass
class Parts:
    blocks_path: str  # e.g. "bert.encoder.layer"
    num_blocks: int
    head: list[str]  # module names of the task head (always trained)
    embeddings: list[str]  # module names of the input embeddings
    # Every stack of blocks an adapter goes into: the encoder's and the decoder's of an
    # encoder-decoder (T5, BART); `blocks_path` alone otherwise.
    stacks: list[str]


def find_parts(model: nn.Module) -> Parts:
    """Blocks are the largest ModuleList of same-type modules; the head lies outside the base model.

    An encoder-decoder has two stacks: the largest list in its encoder and the largest in its decoder.
    """
    lists = _block_lists(model)
    if not lists:
        raise ModelError(f"{type(model).__name__}: found no list of transformer blocks to choose layers from")
    best = max(lists, key=lambda item: item[2])
    blocks_path = best[0]
    stacks = [blocks_path]
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        stacks = [_largest_under(lists, _module_name(model, m)) for m in (model.get_encoder(), model.get_decoder())]  # type: ignore[operator]
        if blocks_path not in stacks or "" in stacks:  # not the two stacks expected: the largest alone
            stacks = [blocks_path]
    prefix = getattr(model, "base_model_prefix", "")
    head = []
    for name, child in model.named_children():
        if name != prefix and any(p.numel() for p in child.parameters()):
            head.append(name)
    base = getattr(model, prefix, None) if prefix else None
    if base is not None and getattr(base, "pooler", None) is not None:
        head.append(f"{prefix}.pooler")  # feeds the classifier directly; trains with it
    embeddings = []
    for name, _module in model.named_modules():
        if name.split(".")[-1] == "embeddings" and not name.startswith(blocks_path):
            embeddings = [name]
            break
    if not embeddings:
        embeddings = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding) and not n.startswith(blocks_path)]
    return Parts(blocks_path, best[1], head, embeddings, stacks)


def _block_lists(model: nn.Module) -> list[tuple[str, int, int]]:
    """(name, length, parameter count) of every non-empty ModuleList of same-type modules."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(m) for m in module}) == 1:
            out.append((name, len(module), sum(p.numel() for p in module.parameters())))
    return out


def _module_name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def _largest_under(lists: list[tuple[str, int, int]], root: str) -> str:
    inside = [item for item in lists if item[0].startswith(root + ".")]
    return max(inside, key=lambda item: item[2])[0] if inside else ""


def adaptable_linear_names(model: nn.Module, stacks: list[str]) -> list[str]:
    """Full names of the linear layers (nn.Linear or GPT-2's Conv1D) inside the transformer blocks of `stacks`."""
    names = []
    for name, module in model.named_modules():
        if not any(name.startswith(path + ".") for path in stacks):
            continue
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            names.append(name)
    return names


# Attention key and value projections by their leaf names across architectures (BERT/RoBERTa,
# Llama/Mistral/Qwen/BART, T5, DistilBERT), and the fused query-key-value projections some
# architectures have instead (GPT-2, GPT-NeoX/Falcon, Phi-3, MPT). Nothing in a layer's shape tells
# a key projection from a query projection, so these are names; the feed-forward outputs are found
# by shape.
KEY_VALUE_NAMES = ("key", "value", "k_proj", "v_proj", "k", "v", "k_lin", "v_lin")
FUSED_QKV_NAMES = ("c_attn", "query_key_value", "qkv_proj", "Wqkv")


def _linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of nn.Linear or GPT-2's Conv1D (which stores its weight as (in, out))."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":
        weight = module.weight
        assert isinstance(weight, torch.Tensor)
        fan_in, fan_out = weight.shape
        return fan_in, fan_out
    return None


def ia3_target_names(model: nn.Module, stacks: list[str]) -> tuple[list[str], list[str]]:
    """(IA)^3 targets in every block of `stacks`: (the key/value and feed-forward output linears, the latter alone).

    A block's feed-forward output layers are its linears with the widest input, wider than their
    output (BERT's output.dense, GPT-2's mlp.c_proj, Llama's down_proj). Where a block has no
    separate key and value projections, its fused query-key-value projection stands for them.
    Returns empty lists when a block lacks either kind.
    """
    targets: list[str] = []
    feedforward: list[str] = []
    blocks = [(path, index, block) for path in stacks for index, block in enumerate(model.get_submodule(path).children())]
    for blocks_path, index, block in blocks:
        prefix = f"{blocks_path}.{index}."
        shapes = {name: shape for name, module in block.named_modules() if (shape := _linear_shape(module)) is not None}
        leaf = {name: name.rsplit(".", 1)[-1] for name in shapes}
        key_value = [n for n in shapes if leaf[n] in KEY_VALUE_NAMES] or [n for n in shapes if leaf[n] in FUSED_QKV_NAMES]
        widest = max((fan_in for fan_in, _ in shapes.values()), default=0)
        ffn_out = [n for n, (fan_in, fan_out) in shapes.items() if fan_in == widest and fan_in > fan_out]
        if not key_value or not ffn_out:
            return [], []
        targets += [prefix + n for n in key_value + ffn_out]
        feedforward += [prefix + n for n in ffn_out]
    return targets, feedforward
