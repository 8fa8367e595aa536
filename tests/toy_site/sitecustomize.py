"""Registers the tests' toy task (tests/toy_task.py) in a process started with this folder on PYTHONPATH."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import toy_task

toy_task.register()
