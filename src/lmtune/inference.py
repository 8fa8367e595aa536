"""Load a fine-tuned model (a run folder or a saved model folder) and use it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmtune.config import DataConfig, ModelConfig
from lmtune.data.batching import EncodedDataset, LengthGroupedBatchSampler, PadCollator, encode_texts
from lmtune.data.classification import LabelSpace, check_known_labels, read_examples, read_texts, with_label_type
from lmtune.errors import DataError, ModelError
from lmtune.eval.evaluate import predict_scores, score
from lmtune.generator import Generator, load_generator
from lmtune.models.first_token import trim_last_block
from lmtune.models.saving import META_FILE, save_model, write_atomically


def find_model_dir(path: str | Path) -> Path | None:
    """A run folder's best/ (else final/) model, a saved model folder itself, or None."""
    p = Path(path)
    for candidate in (p, p / "best", p / "final"):
        if (candidate / META_FILE).is_file():
            return candidate
    return None


def resolve_model_dir(path: str | Path) -> Path:
    """As find_model_dir, but a path that holds no lmtune model is an error."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p} does not exist; give a run folder or a saved model folder")
    found = find_model_dir(p)
    if found is not None:
        return found
    raise ModelError(f"{p} is neither an lmtune run folder (with best/ or final/) nor a model folder with {META_FILE}")


def base_model_config(meta: dict[str, Any]) -> ModelConfig:
    return ModelConfig(**meta["base_model"])


class Classifier:
    """A fine-tuned classifier: `predict(texts)` gives labels and class probabilities."""

    def __init__(self, model: nn.Module, tokenizer: Any, meta: dict[str, Any], folder: Path):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.meta = meta
        self.folder = folder
        self.labels = LabelSpace(meta["label_type"], meta["labels"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def loader(self, texts: list[str], pairs: list[str] | None, targets: list[Any] | None, batch_size: int) -> Any:
        ids, types, _ = encode_texts(self.tokenizer, texts, pairs, self.meta["max_length"])
        if targets is None:
            targets = [0.0] * len(ids)
        dataset = EncodedDataset(ids, targets, types)
        dtype = torch.long if self.labels.label_type == "single" else torch.float32
        sampler = LengthGroupedBatchSampler(dataset.lengths, batch_size, seed=0, shuffle=False)
        device = self.device

        def to_device(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
            return {k: v.to(device) for k, v in PadCollator(self.tokenizer.pad_token_id, dtype)(items).items()}

        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=to_device)

    def scores(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32) -> Any:
        scores, _, _ = predict_scores(self.model, self.loader(texts, pairs, None, batch_size), self.labels.label_type)
        return scores

    def read_texts(self, path: str) -> tuple[list[str], list[str] | None]:
        """The texts of a data file, from the columns the model was trained on."""
        return read_texts(path, self.meta["text_column"], self.meta["text_pair_column"])

    def evaluate(self, path: str, batch_size: int = 32) -> dict[str, Any]:
        """Score the model on a labelled data file with the training run's columns and labels."""
        separator = self.meta.get("label_separator", ",")
        columns = DataConfig(
            train=path, text_column=self.meta["text_column"], text_pair_column=self.meta["text_pair_column"],
            label_column=self.meta["label_column"], label_separator=separator,
        )
        examples = with_label_type(read_examples(path, columns, None), self.labels.label_type, separator)
        check_known_labels(examples, self.labels)
        targets = [self.labels.encode(v) for v in examples.labels]
        loader = self.loader(examples.texts, examples.pairs, targets, batch_size)
        scores, refs, _ = predict_scores(self.model, loader, self.labels.label_type)
        return score(scores, refs, self.labels, self.meta.get("threshold", 0.5))

    def predict(self, texts: list[str] | str, pairs: list[str] | None = None, batch_size: int = 32) -> list[dict[str, Any]]:
        """One dict per text: label (or labels / score) and per-class probabilities."""
        if isinstance(texts, str):
            texts = [texts]
        empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if empty:
            raise DataError(f"text {empty[0] + 1} of {len(texts)} is empty or not text ({texts[empty[0]]!r}); "
                            f"lmtune does not classify empty texts (training refuses them too)")
        scores = self.scores(list(texts), pairs, batch_size)
        out = []
        for row in scores:
            if self.labels.label_type == "regression":
                out.append({"score": float(row)})
                continue
            probs = {name: float(p) for name, p in zip(self.labels.names, row)}
            if self.labels.label_type == "single":
                out.append({"label": self.labels.names[int(row.argmax())], "probabilities": probs})
            else:
                threshold = self.meta.get("threshold", 0.5)
                chosen = [n for n, p in probs.items() if p >= threshold]
                out.append({"labels": chosen, "probabilities": probs})
        return out


def load(path: str | Path, device: str | None = None) -> Classifier | Generator:
    """Load a run folder (its best model) or a saved model folder: a Classifier, or a Generator for causal LMs."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = resolve_model_dir(path)
    meta = json.loads((folder / META_FILE).read_text())
    if meta.get("task") in ("causal_lm", "translation"):
        return load_generator(path, folder, meta, device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if meta.get("adapter"):
        from peft import PeftModel

        from lmtune.models.loading import load_classifier

        base = load_classifier(base_model_config(meta), tokenizer, meta["labels"], meta["problem_type"])
        model = PeftModel.from_pretrained(base, folder)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
    trim_last_block(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Classifier(model.to(device), tokenizer, meta, folder)


def merge_adapter(path: str | Path, target: str | Path) -> Path:
    """Fold a LoRA adapter into its base model and save a plain transformers model folder."""
    loaded = load(path, device="cpu")
    if not loaded.meta.get("adapter"):
        raise ModelError(f"{loaded.folder} holds a full model, not a LoRA adapter: there is nothing to merge")
    merged = loaded.model.merge_and_unload()
    save_model(merged, loaded.tokenizer, {**loaded.meta, "merged_from": str(loaded.folder)}, Path(target))
    return Path(target)


def export_model(path: str | Path, target: str | Path | None = None, merge: bool = False) -> Path:
    """Write a run's model to a folder: merged (LoRA folded into its base) with `merge`, else as saved."""
    folder = resolve_model_dir(path)
    run = folder.parent if folder.name in ("best", "final") else folder
    out = Path(target) if target else run / ("merged" if merge else "export")
    if merge:
        return merge_adapter(folder, out)
    write_atomically(out, lambda tmp: shutil.copytree(folder, tmp, dirs_exist_ok=True))
    return out
