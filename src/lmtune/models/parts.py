"""Find the parts of a transformer by structure: its block list, embeddings and task head."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lmtune.errors import ModelError

HEAD_NAMES = ("classifier", "score", "pre_classifier", "pooler")


@dataclass
class Parts:
    blocks_path: str  # e.g. "bert.encoder.layer"
    num_blocks: int
    head: list[str]  # module names of the task head (always trained)
    embeddings: list[str]  # module names of the input embeddings


def find_parts(model: nn.Module) -> Parts:
    """Blocks are the largest ModuleList of same-type modules; the head lies outside the base model."""
    best: tuple[str, int, int] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(m) for m in module}) == 1:
            size = sum(p.numel() for p in module.parameters())
            if best is None or size > best[2]:
                best = (name, len(module), size)
    if best is None:
        raise ModelError(f"{type(model).__name__}: found no list of transformer blocks to choose layers from")
    blocks_path = best[0]
    prefix = getattr(model, "base_model_prefix", "")
    head = []
    for name, child in model.named_children():
        if name != prefix and any(p.numel() for p in child.parameters()):
            head.append(name)
    base = getattr(model, prefix, None) if prefix else None
    if base is not None and getattr(base, "pooler", None) is not None:
        head.append(f"{prefix}.pooler")  # feeds the classifier directly; trains with it
    embeddings = []
    for name, module in model.named_modules():
        if name.split(".")[-1] == "embeddings" and not name.startswith(blocks_path):
            embeddings = [name]
            break
    if not embeddings:
        embeddings = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding) and not n.startswith(blocks_path)]
    return Parts(blocks_path, best[1], head, embeddings)


def adaptable_linear_names(model: nn.Module, blocks_path: str) -> list[str]:
    """Full names of the linear layers (nn.Linear or GPT-2's Conv1D) inside the transformer blocks."""
    names = []
    for name, module in model.named_modules():
        if not name.startswith(blocks_path + "."):
            continue
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            names.append(name)
    return names
