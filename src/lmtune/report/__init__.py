"""report.md: what a run did and how good it got, rebuilt from its run folder."""

from lmtune.report.markdown import write_report

__all__ = ["write_report"]
