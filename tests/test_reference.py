"""The README's config reference is written from the schema: every key is in it, with its description."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from lmtune.reference import END, START, config_reference, main, with_reference
from lmtune.schema import Config
from lmtune.tasks import TASKS

README = Path(__file__).resolve().parents[1] / "README.md"


def _keys(section: type[BaseModel], prefix: str = "") -> dict[str, str | None]:
    keys: dict[str, str | None] = {}
    for name, field in section.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.update(_keys(annotation, f"{prefix}{name}."))
        else:
            keys[f"{prefix}{name}"] = field.description
    return keys


def test_readme_reference_is_the_generated_one():
    assert main(["--check", "--readme", str(README)]) == 0


def test_every_key_of_every_task_has_a_description_and_a_row():
    reference = config_reference()
    for task in TASKS.values():
        for key, description in _keys(task.config_class).items():
            if key == "task":  # each task's class narrows it to its own name; the row is the shared field's
                continue
            assert description, f"{task.name}: {key} has no description"
            assert f"| `{key}` |" in reference, f"{key} ({task.name}) is missing from the reference"
    assert "| `task` |" in reference and "| `data.doc_stride` |" in reference
    assert not {"| `data` |", "| `model` |"} & set(reference.splitlines())  # sections are not rows


def test_an_edited_table_is_found_out_and_rewritten(tmp_path):
    readme = tmp_path / "README.md"
    stale = f"intro\n{START}\n| `train.epochs` | 4 | edited by hand |\n{END}\nrest\n"
    readme.write_text(stale)
    assert main(["--check", "--readme", str(readme)]) == 1
    assert main(["--write", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "edited by hand" not in text
    assert "| `train.epochs` | 3 | Passes over the training data. |" in text
    assert with_reference(text) == text
    assert Config.model_fields["task"].description
