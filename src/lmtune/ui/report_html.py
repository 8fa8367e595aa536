"""A run's report.md as HTML for the run page: Markdown rendered with raw HTML escaped, plots served by the app.

The report quotes user text (config values, generated replies), so raw HTML in it is shown as text,
never run. Its images are relative to the run folder (`plots/loss.png`): they are pointed at the
app's file route, and only those inside the run folder are kept.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from lmtune.run_dir import RunDir
from lmtune.ui.workspace import Workspace


def report_html(ws: Workspace, run: RunDir) -> str | None:
    """The rendered report, or None before the run has one."""
    from markdown_it import MarkdownIt

    if not run.report_file.is_file():
        return None
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(run.report_file.read_text(encoding="utf-8"))
    folder = run.path.resolve()
    for token in tokens:
        for child in token.children or []:
            if child.type == "image":
                child.attrSet("src", _served(ws, folder, str(child.attrGet("src") or "")))
                child.attrSet("class", "plot")
            elif child.type == "link_open" and not str(child.attrGet("href") or "").startswith(("http://", "https://", "#")):
                child.attrSet("href", _served(ws, folder, str(child.attrGet("href") or "")))
    return md.renderer.render(tokens, md.options, {})


def _served(ws: Workspace, folder: Path, reference: str) -> str:
    """The app's URL of a file the report names relative to its run folder; nothing for one outside it."""
    target = (folder / reference).resolve()
    return "/api/file?" + urlencode({"path": ws.relative(target)}) if target.is_relative_to(folder) and target.is_file() else ""


__all__ = ["report_html"]
