"""Runs and searches the app launches: `lmtune train` (and `--resume`) or `lmtune search`, as processes of their own.

A job is a process started in its own session, so it goes on when the app stops; its record
(`.lmtune-ui/jobs/NAME.json`: pid, command, run or search folder, start time) and its output
(`NAME.out`) let a restarted app find it again. Stop sends SIGTERM: the run finishes its step,
writes a checkpoint and exits, as on Ctrl-C (a search records that trial as failed and ends).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lmtune.files import write_json
from lmtune.ui.workspace import UiError, Workspace


@dataclass
class Job:
    name: str
    pid: int
    run: str  # the run folder, relative to the workspace
    command: list[str]
    started: float
    kind: str = "train"  # or "search"
    config: str = ""  # the config file it was started with

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)  # our own exited children are reaped in Jobs.all(), so they do not linger as zombies
        except (ProcessLookupError, PermissionError):
            return False
        return True


class Jobs:
    def __init__(self, workspace: Workspace):
        self.ws = workspace
        self.folder = workspace.app_folder / "jobs"
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def all(self) -> list[Job]:
        self._reap()
        jobs = []
        for f in sorted(self.folder.glob("*.json")):
            try:
                jobs.append(Job(**json.loads(f.read_text(encoding="utf-8"))))
            except (ValueError, TypeError):
                continue  # a record cut short: not one of ours to manage
        return jobs

    def latest(self, run: str) -> Job | None:
        """The last job started on a run folder, if the app started one."""
        return self.latest_by_run().get(run)

    def latest_by_run(self) -> dict[str, Job]:
        """Each run folder's last job (the job files are read once, for a whole listing)."""
        return {j.run: j for j in sorted(self.all(), key=lambda j: j.started)}

    def output(self, job: Job) -> Path:
        return self.folder / f"{job.name}.out"

    def start(self, config_file: Path, run: str, resume: bool = False) -> Job:
        """`lmtune train CONFIG` into the run folder `run` (relative to the workspace)."""
        return self._launch("train", config_file, run, ["--resume"] if resume else [], "-resume" if resume else "")

    def start_search(self, config_file: Path, folder: str, n_trials: int | None = None) -> Job:
        """`lmtune search CONFIG` into `folder`: a new study, or more trials for the one there."""
        more = [f"search.n_trials={n_trials}"] if n_trials else []
        return self._launch("search", config_file, folder, more, "-more" if more else "")

    def _launch(self, kind: str, config_file: Path, run: str, extra: list[str], suffix: str) -> Job:
        current = self.latest(run)
        if current is not None and current.alive():
            raise UiError(f"{run} is already running (pid {current.pid}); stop it first", 409)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(run).name}{suffix}"
        command = [sys.executable, "-m", "lmtune", kind, str(config_file), "--quiet", f"output.dir={self.ws.root / run}", *extra]
        with (self.folder / f"{name}.out").open("wb") as out:
            # a session of its own: the run outlives the app, and Ctrl-C on the app does not reach it
            process = subprocess.Popen(command, cwd=self.ws.root, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self._children[process.pid] = process
        job = Job(name=name, pid=process.pid, run=run, command=command, started=time.time(), kind=kind, config=str(config_file))
        write_json(self.folder / f"{name}.json", asdict(job))
        return job

    def stop(self, run: str) -> Job:
        job = self.latest(run)
        if job is None or not job.alive():
            raise UiError(f"{run} is not running (only runs started here can be stopped here; stop others with Ctrl-C)", 409)
        os.kill(job.pid, signal.SIGTERM)  # graceful: the loop checkpoints at the end of its step
        return job

    def _reap(self) -> None:
        for pid, process in list(self._children.items()):
            if process.poll() is not None:
                del self._children[pid]
