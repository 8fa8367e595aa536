"""Run reports: `report.md` with plots, written at the end of every run and by `lmtune report RUN`."""

from lmtune.report.markdown import REPORT_FILE, write_report

__all__ = ["REPORT_FILE", "write_report"]
