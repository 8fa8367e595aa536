"""Where a search's Optuna study lives: a file in its folder, a database several machines share, or a journal file.

`search.storage` unset: `OUTPUT_DIR/study.db` (SQLite), for one machine. A database URL
(`postgresql://user@host:5432/db`, or any SQLAlchemy URL Optuna accepts) lets `lmtune search`
on several machines add trials to one study. `journal:PATH` keeps the study in Optuna's journal
file, for machines that share a file system but no database (NFS and the like, where SQLite's
locks are unsafe).

A search with a shared storage writes `OUTPUT_DIR/study.json`: the storage without its password,
and the study's name, so that `lmtune ui` can follow it. The password stays out of every file;
PostgreSQL clients (the app included) find it where libpq looks: `PGPASSWORD` or `~/.pgpass`.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from lmtune.errors import ConfigError
from lmtune.files import write_text
from lmtune.run_dir import SearchDir

JOURNAL = "journal:"
CREATE_ATTEMPTS = 8  # tries at setting up a database's tables while other machines do the same
PACKAGES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pymysql": "PyMySQL", "mysqldb": "mysqlclient"}  # driver -> pip


def storage_spec(storage: str | None, folder: Path) -> str:
    """The storage a search uses: `search.storage`, else the SQLite file in its folder."""
    return storage or f"sqlite:///{SearchDir(folder).study_db.resolve()}"


def open_storage(spec: str, create: bool = True) -> Any:
    """An Optuna storage for a spec of `storage_spec`; a driver missing or a server out of reach is a ConfigError."""
    import optuna

    if spec.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        path = Path(spec[len(JOURNAL):]).expanduser()
        if not path.parent.is_dir():
            raise ConfigError(f"search.storage={spec!r}: the folder {path.parent} does not exist")
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

    try:
        url = make_url(spec)
    except ArgumentError:
        raise ConfigError(f"search.storage={spec!r} is not a database URL (postgresql://user@host:5432/db) "
                          f"or {JOURNAL}PATH") from None
    try:
        dialect = url.get_dialect()  # postgresql:// is SQLAlchemy's default driver for it (psycopg)
        dialect.import_dbapi()
    except ImportError as err:
        driver = getattr(err, "name", None) or url.drivername
        raise ConfigError(f"search.storage {shown(spec)} needs the {driver} driver: pip install {PACKAGES.get(driver, driver)}") from None
    except NoSuchModuleError:
        raise ConfigError(f"search.storage {shown(spec)}: SQLAlchemy knows no database {url.drivername!r}") from None
    for attempt in range(CREATE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(spec, skip_table_creation=not create, skip_compatibility_check=not create)
        except IntegrityError:
            # another machine is creating the same tables at this moment (each step of Optuna's set-up
            # checks first, then writes): once it is done, a new try finds them all there
            if attempt == CREATE_ATTEMPTS - 1:
                raise ConfigError(f"search.storage {shown(spec)}: its tables could not be set up "
                                  f"({CREATE_ATTEMPTS} tries, each clashing with another machine's)") from None
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
        except SQLAlchemyError as err:
            reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            raise ConfigError(f"search.storage {shown(spec)} cannot be reached: {reason}") from None
    raise AssertionError("unreachable")


def shown(spec: str) -> str:
    """A storage spec as it may be printed or written: a URL without its password."""
    if spec.startswith(JOURNAL):
        return spec
    from sqlalchemy.engine import make_url

    return make_url(spec)._replace(password=None).render_as_string(hide_password=False)  # (URL.set keeps a password given None)


def write_study_record(folder: Path, spec: str, study_name: str) -> None:
    """`study.json` for a study outside the folder: where it is (no password) and its name."""
    write_text(SearchDir(folder).study_record, json.dumps({"storage": shown(spec), "study_name": study_name}, indent=2) + "\n")


def read_study_record(folder: Path) -> dict[str, str] | None:
    """What `write_study_record` wrote, or None for a search whose study is its folder's study.db."""
    record = SearchDir(folder).study_record
    if not record.is_file():
        return None
    try:
        loaded = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{record} is not readable JSON: {err}") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("storage"), str):
        raise ConfigError(f"{record} does not name a storage")
    return {"storage": loaded["storage"], "study_name": str(loaded.get("study_name", "lmtune"))}
