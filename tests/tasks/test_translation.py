"""Translation on tiny models: an encoder-decoder trained on pairs, a decoder through its prompt,
headerless pair files, and the errors a user meets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lmtune
from conftest import make_config
from lmtune.config import build_config
from lmtune.data.chat import IGNORE
from lmtune.errors import ConfigError, DataError
from lmtune.tasks.translation import TranslationTask

DEFAULTS = {"train": {"epochs": 10, "learning_rate": 1e-2, "log_every_n_steps": 25, "save_every_n_steps": 1000}}


def mt_config(model_dir: Path, files: dict[str, Path], out: Path, **sections) -> dict:
    return make_config(model_dir, files, out, "translation", DEFAULTS, **sections)


def test_encoder_decoder_learns_to_translate_and_reloads(tiny_t5, translation_data, tmp_path):
    result = lmtune.train(mt_config(tiny_t5, translation_data, tmp_path / "run",
                                    eval={"generate": True, "max_new_tokens": 12, "at_start": True, "metric": "bleu"}),
                          progress=False)
    m = result.metrics
    assert m["initial"]["bleu"] < 1 and m["initial"]["chrf"] < 5
    assert m["bleu"] > 10 and m["chrf"] > 40
    lm = lmtune.load(tmp_path / "run")
    assert lm.meta["seq2seq"] is True
    again = lm.evaluate(str(translation_data["validation"]), max_new_tokens=12)
    assert again["loss"] == pytest.approx(m["loss"], rel=1e-5)
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    sources = {row.split(",")[0] for row in translation_data["validation"].read_text().splitlines()[1:]}
    assert {s["prompt"] for s in samples} <= sources  # an encoder-decoder reads the source as it is


def test_encoder_decoder_lora_saves_an_adapter_that_reloads(tiny_t5, translation_data, tmp_path):
    lmtune.train(mt_config(tiny_t5, translation_data, tmp_path / "run", method={"name": "lora"}, train={"epochs": 1}),
                 progress=False)
    lm = lmtune.load(tmp_path / "run")
    assert lm.meta["adapter"] and len(lm.generate(["hello who"])) == 1
    assert lm.evaluate(str(translation_data["validation"]), max_new_tokens=8)["chrf"] >= 0


@pytest.mark.parametrize(("method", "initial"), [("lora", "lora_B"), ("dora", "lora_B"), ("ia3", "ia3_l")])
def test_adapters_go_into_both_stacks_of_an_encoder_decoder_and_both_train(tiny_t5, translation_data, tmp_path, method, initial):
    from safetensors.torch import load_file

    lmtune.train(mt_config(tiny_t5, translation_data, tmp_path / "run", method={"name": method}, train={"epochs": 1}),
                 progress=False)
    saved = load_file(tmp_path / "run" / "best" / "adapter_model.safetensors")
    for stack in ("encoder", "decoder"):
        learned = {k: v for k, v in saved.items() if f".{stack}.block." in k and initial in k}
        assert len(learned) >= 2, (stack, sorted(saved))  # every block of the stack holds the adapter
        start = 1.0 if initial == "ia3_l" else 0.0  # (IA)^3 vectors start at 1, LoRA's B at 0
        assert all((v != start).any() for v in learned.values()), stack  # and it trained


def test_a_decoder_translates_through_its_instruction(tiny_lms, translation_data, tmp_path):
    cfg = build_config(mt_config(tiny_lms["llama"], translation_data, tmp_path / "unused",
                                          data={"source_lang": "Zorb", "target_lang": "Quix"}))
    task = TranslationTask(cfg)
    task.load_data()
    from lmtune.models.loading import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    task.load_model(tokenizer)
    first = task.data.train.messages[0]
    assert first[0]["content"].startswith("Translate the following Zorb text to Quix.\n\n")
    item = task.encode(tokenizer, 64).train[0]
    trained = [t for t in item["target"] if t != IGNORE]
    assert tokenizer.decode(trained) == first[1]["content"] + " </s>"  # only the translation (and its end) is learned

    lmtune.train(mt_config(tiny_lms["llama"], translation_data, tmp_path / "run", data={"source_lang": "Zorb", "target_lang": "Quix"},
                           train={"epochs": 1}), progress=False)
    lm = lmtune.load(tmp_path / "run")
    assert "Translate the following Zorb text to Quix." in lm.prompt_text([{"role": "user", "content": lm.user_text("hello")}])


def test_headerless_tab_separated_pairs_with_a_bom(tiny_t5, tmp_path):
    pairs = tmp_path / "pairs.txt"  # as Tatoeba's files: source, target, attribution; no header line
    pairs.write_text("\ufeffhello who\thi what\tsome attribution\n" + "my name\tyour answer\tanother\n" * 5, encoding="utf-8")
    result = lmtune.train(mt_config(tiny_t5, {"train": pairs, "validation": pairs}, tmp_path / "run",
                                    data={"header": False, "source_column": "0", "target_column": "1"}, train={"epochs": 1}),
                          progress=False)
    assert result.metrics["steps"] == 1


def test_translation_errors_name_the_key_or_the_line(tiny_lms, tiny_t5, translation_data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="needs data.source_lang and data.target_lang"):
        lmtune.train(mt_config(tiny_lms["llama"], translation_data, out), progress=False)
    with pytest.raises(ConfigError, match="bleu and chrf need eval.generate"):
        lmtune.train(mt_config(tiny_t5, translation_data, out, eval={"metric": "bleu"}), progress=False)
    with pytest.raises(ConfigError, match="apply to decoder-only models"):
        lmtune.train(mt_config(tiny_t5, translation_data, out, data={"packing": True}), progress=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("source,target\nhello who,hi what\nmy name,\n")
    with pytest.raises(DataError, match=r"bad.csv: line 3: 'target' is empty or not text; fill it, or set data.on_empty: drop"):
        lmtune.train(mt_config(tiny_t5, {"train": bad, "validation": bad}, out), progress=False)
    task = TranslationTask(build_config(mt_config(tiny_t5, {"train": bad, "validation": bad}, out, data={"on_empty": "drop"})))
    task.load_data()
    assert [m[1]["content"] for m in task.data.train.messages] == ["hi what"]
    with pytest.raises(DataError, match="no column 'src'"):
        lmtune.train(mt_config(tiny_t5, translation_data, out, data={"source_column": "src"}), progress=False)
    assert not out.exists()


def test_split_batches_keep_every_target_token_of_an_encoder_decoder():
    """auto_batch_size cuts batches by rows: an encoder-decoder's labels keep their own width."""
    from lmtune.data.batching import LabelsCollator
    from lmtune.train.step import split_batch

    items = [{"index": 0, "input_ids": [5, 6], "target": [7, 8, 9, 10, 3]},
             {"index": 1, "input_ids": [5, 6, 7, 8], "target": [9, 3]}]
    batch = LabelsCollator(0)(items)
    first, second = split_batch(batch, 2)
    assert first["labels"].tolist() == [[7, 8, 9, 10, 3]] and first["input_ids"].tolist() == [[5, 6]]
    assert second["labels"].tolist() == [[9, 3]] and second["input_ids"].tolist() == [[5, 6, 7, 8]]
