"""One study shared by `lmtune search` on several machines: a real PostgreSQL server, and Optuna's journal file.

Each machine is an `lmtune search` process of its own, with its own output folder and the same
`search.storage`; they run at once. The web app follows the shared study from either folder.
"""

from __future__ import annotations

import csv
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from servers import UiServer, free_port
from toy import toy_rows, write_csv
from webapp import run_config

LR = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of the installed binaries, in a temp folder, on 127.0.0.1 (trust auth); its database URL."""
    binaries = PG_BIN[-1] if PG_BIN else os.path.dirname(shutil.which("initdb") or "")
    if not binaries or importlib.util.find_spec("psycopg") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs PostgreSQL (Debian's postgresql) and psycopg: make install sets both up")
        pytest.skip("needs PostgreSQL's initdb and psycopg")
    root = Path(tempfile.mkdtemp(prefix="lmtune-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the server runs as the postgres (else nobody) user
        user = "postgres" if shutil.which("id") and subprocess.run(["id", "postgres"], capture_output=True).returncode == 0 else "nobody"
        shutil.chown(root, user)
        as_user = ["runuser", "-u", user, "--"]
    port = free_port()
    data = root / "data"
    subprocess.run([*as_user, f"{binaries}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
    subprocess.run([*as_user, f"{binaries}/pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "start",
                    "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE lmtune")  # outside a transaction, as it must be
        yield f"postgresql://postgres:not-written@127.0.0.1:{port}/lmtune"  # trust auth: the password is not checked
    finally:
        subprocess.run([*as_user, f"{binaries}/pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def search_yaml(workspace: Path, name: str, storage: str) -> Path:
    cfg = {**run_config(workspace, epochs=1, save_every_n_steps=1000, keep_last_checkpoints=1),
           "search": {"n_trials": 2, "storage": storage, "study_name": "shared", "space": {"train.learning_rate": LR}},
           "output": {"dir": f"searches/{name}"}}
    path = workspace / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def two_machines(workspace: Path, storage: str, names: tuple[str, str]) -> list[subprocess.CompletedProcess]:
    """`lmtune search` twice at once, each with its own folder, the same storage: two machines sharing a study."""
    procs = [subprocess.Popen([sys.executable, "-m", "lmtune.cli", "search", str(search_yaml(workspace, n, storage)), "--quiet"],
                              cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in names]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def trials(folder: Path) -> list[dict]:
    with (folder / "trials.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def own_workspace(tmp_path_factory, tiny_models) -> Iterator[tuple[Path, UiServer]]:
    """A workspace and web app of this module's own, so that its searches do not show in other tests' lists."""
    root = tmp_path_factory.mktemp("shared-workspace")
    shutil.copytree(tiny_models["bert"], root / "models" / "bert")
    write_csv(root / "train.csv", toy_rows(240, seed=1))
    write_csv(root / "validation.csv", toy_rows(60, seed=2))
    server = UiServer(root)
    yield root, server
    server.stop()


@pytest.mark.parametrize("kind", ["postgresql", "journal"])
def test_two_machines_add_their_trials_to_one_study_the_app_follows(kind, request, own_workspace):
    workspace, ui = own_workspace
    storage = request.getfixturevalue("postgres") if kind == "postgresql" else f"journal:{workspace / 'shared-journal.log'}"
    names = (f"{kind}-a", f"{kind}-b")
    for result in two_machines(workspace, storage, names):
        assert result.returncode == 0, result.stderr[-2000:]
    folders = [workspace / "searches" / n for n in names]
    # the machine that finished last wrote every trial of the study to its trials.csv, all complete
    assert any(sorted((int(r["number"]), r["state"]) for r in trials(f)) == [(n, "complete") for n in range(4)] for f in folders)
    for folder in folders:  # each machine ran its own 2 trials, in its folder
        assert len(list((folder / "trials").glob("trial-*"))) == 2
        record = json.loads((folder / "study.json").read_text())
        assert record["study_name"] == "shared" and "not-written" not in record["storage"]  # never the password
        assert not (folder / "study.db").exists()
    with httpx.Client(base_url=ui.url, timeout=60) as client:
        listed = {s["path"]: s for s in client.get("/api/searches").json()}
        for name in names:
            info = client.get("/api/search", params={"path": f"searches/{name}"}).json()
            assert info["n_trials"] == 4 and info["counts"] == {"complete": 4} and info["study"] == "shared", info
            assert listed[f"searches/{name}"]["best_value"] == info["best_value"]


def test_a_storage_out_of_reach_or_without_its_driver_is_a_clear_error(own_workspace, tmp_path):
    """Exit code 2 before anything is written, the URL shown without its password."""
    workspace = own_workspace[0]
    from lmtune.errors import ConfigError
    from lmtune.search.storage import open_storage

    config = search_yaml(workspace, "unreachable", f"postgresql://someone:hidden@127.0.0.1:{free_port()}/db")
    result = subprocess.run([sys.executable, "-m", "lmtune.cli", "search", str(config), "--quiet"], cwd=workspace,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "search.storage postgresql://someone@127.0.0.1:" in result.stderr and "cannot be reached" in result.stderr
    assert "hidden" not in result.stderr and not (workspace / "searches" / "unreachable").exists()
    assert importlib.util.find_spec("pg8000") is None  # a PostgreSQL driver not installed here
    with pytest.raises(ConfigError, match=r"postgresql\+pg8000://u@127.0.0.1:1/db needs the pg8000 driver: pip install pg8000"):
        open_storage("postgresql+pg8000://u:pw@127.0.0.1:1/db")
    with pytest.raises(ConfigError, match="the folder .* does not exist"):
        open_storage(f"journal:{tmp_path / 'missing' / 'study.log'}")
    with pytest.raises(ConfigError, match="is not a database URL"):
        open_storage("not a url")
    with pytest.raises(ConfigError, match="SQLAlchemy knows no database 'nosuchdb'"):
        open_storage("nosuchdb://u:pw@host/db")
