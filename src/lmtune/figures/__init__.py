"""Figures and tables for reports: PNG plots of a run's curves and Markdown tables, usable by every layer above."""
