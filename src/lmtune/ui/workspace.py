"""The workspace folder the web app works in: every path it reads or writes stays inside it.

A path from the browser is relative to the workspace; `..`, an absolute path, or a symlink that
leads out is refused (UiError, status 403) before anything is opened.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from lmtune.data.readers import FORMATS
from lmtune.run_dir import RunDir, SearchDir

APP_FOLDER = ".lmtune-ui"  # the app's own files: job records and their output
UPLOADS = "uploads"
MAX_DEPTH = 5  # how deep the workspace is searched for data files and runs


class UiError(Exception):
    """A request the app refuses: the message is shown to the user, with an HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Workspace:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def path(self, relative: str) -> Path:
        """The file or folder `relative` names, which must lie inside the workspace."""
        if not relative or "\x00" in relative:
            raise UiError("no path given")
        given = Path(relative)
        resolved = (self.root / given).resolve()
        if given.is_absolute() or ".." in given.parts or not resolved.is_relative_to(self.root):
            raise UiError(f"{relative!r} is outside the workspace {self.root}; give a path inside it", 403)
        return resolved

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    @property
    def app_folder(self) -> Path:
        return self.root / APP_FOLDER

    def _walk(self) -> Iterator[tuple[Path, list[str], list[str]]]:
        for folder, dirs, files in os.walk(self.root):
            here = Path(folder)
            depth = len(here.relative_to(self.root).parts)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__" and depth < MAX_DEPTH)
            yield here, dirs, sorted(files)

    def data_files(self) -> list[str]:
        """Data files anywhere in the workspace, except the files runs write."""
        found = []
        for folder, dirs, files in self._walk():
            if RunDir(folder).is_run() or _is_model_folder(files) or SearchDir.marks(files):
                dirs[:] = []  # what runs and searches write (metrics, trials.csv) is not data
                continue
            found += [self.relative(folder / f) for f in files if Path(f).suffix.lower() in FORMATS]
        return found

    def run_folders(self) -> list[RunDir]:
        """Every run folder (one with config.yaml) in the workspace, search trials included."""
        runs = []
        for folder, dirs, _ in self._walk():
            if RunDir(folder).is_run():
                runs.append(RunDir(folder))
                dirs[:] = []
        return runs

    def search_folders(self) -> list[SearchDir]:
        """Every search folder (one with an Optuna study.db, or a study.json naming its shared storage) in the workspace."""
        found = []
        for folder, dirs, files in self._walk():
            if SearchDir.marks(files):
                found.append(SearchDir(folder))
                dirs[:] = []
            elif RunDir(folder).is_run():
                dirs[:] = []
        return found

    def new_upload(self, name: str) -> Path:
        """Where an uploaded file called `name` is written: uploads/NAME, with a number added if taken."""
        clean = Path(name).name
        if not clean or clean.startswith(".") or Path(clean).suffix.lower() not in FORMATS:
            raise UiError(f"upload {name!r}: give a data file ending in one of {', '.join(FORMATS)}")
        target = self.root / UPLOADS / clean
        n = 1
        while target.exists():
            n += 1
            target = target.with_name(f"{Path(clean).stem}-{n}{Path(clean).suffix}")
        return target


def _is_model_folder(files: list[str]) -> bool:
    return "config.json" in files and any(f.endswith((".safetensors", ".bin", ".gguf")) or f == "tokenizer.json" for f in files)
