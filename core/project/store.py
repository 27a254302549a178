"""`Project`: the one way in to a project file. See core/project/__init__.py for the overview."""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import sqlite3
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sqlite_utils import Database

from core.errors import AppError
from core.imports import MAX_TEXT_BYTES, ImportRejected, decode_text, probe_image
from core.project.schema import (APPLICATION_ID, MIGRATION_NAMES, MIGRATIONS, REQUIRED_TABLES,
                                 SCHEMA_VERSION)

SQLITE_MAGIC = b"SQLite format 3\x00"
LOCK_SUFFIX = ".lock"
# A full structural check reads the whole file; above this size opening would feel slow, and
# damage is then reported when the damaged part is read.
QUICK_CHECK_MAX_BYTES = 256 * 1024 * 1024
# Autosaves (the editor saves ~2 s after the last keystroke) update the newest autosave version
# while it is younger than this, so history keeps one autosave per 5 minutes plus every explicit
# save instead of thousands of near-identical versions.
AUTOSAVE_COALESCE_S = 300.0
MAX_IMPORT_FILE_BYTES = 2 * 1024 ** 3
RUN_STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
IMAGE_ORIGINS = ("imported", "generated", "dataset")
DOCUMENT_FORMATS = ("markdown", "plain")
DATASET_KINDS = ("images", "table")
DATASET_STORAGE = ("copied", "referenced")
ITEM_FIELDS = ("split", "label", "image_id", "path", "size", "sha256", "mask_image_id",
               "mask_path", "meta")
_ENTITY = {"documents": "document", "images": "image", "datasets": "dataset",
           "models": "model", "runs": "run"}  # audit action prefixes
RESULT_FIELDS = ("model_id", "item_path", "image_id", "score", "normalized_score", "verdict",
                 "heatmap_image_id", "label", "meta")


class ProjectError(AppError):
    """A project file that cannot be opened, read or written as asked."""


@dataclass(frozen=True)
class Change:
    """Sent to subscribers after a commit. `action` is insert, update or delete.

    Changes to many child rows at once (data set items, inspection results) are announced on the
    parent: Change("datasets", "update", dataset_id), Change("runs", "update", run_id).
    """

    table: str
    action: str
    row_id: int | None


@dataclass
class ImportReport:
    """What an import did: ids of images now in the project, and files skipped with the reason."""

    imported: list[int] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def file_fingerprint(path: str | os.PathLike) -> tuple[int, str]:
    """(size, sha256) of a file, read in chunks: how referenced data is recognised later."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, default=str)


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _now() -> float:
    return time.time()


def _as_epoch(value: Any) -> float | None:
    """Times arrive as epoch floats (the job runner) or datetimes; they are stored as floats."""
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)


def _ro_uri(path: Path, immutable: bool) -> str:
    uri = path.resolve().as_uri() + "?mode=ro"  # as_uri: percent-encoded, Windows drives too
    return uri + "&immutable=1" if immutable else uri


def _side_files(path: Path) -> list[Path]:
    return [Path(str(path) + suffix) for suffix in ("-wal", "-shm", "-journal")]


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection that creates no side files where none exist.

    With no -wal/-shm beside the file no writer is live and the main file holds everything, so
    `immutable` is safe and keeps SQLite from creating -wal/-shm; otherwise read the WAL properly.
    """
    immutable = not any(p.exists() for p in _side_files(path)[:2])
    return sqlite3.connect(_ro_uri(path, immutable), uri=True, check_same_thread=False)


def _refuse(path: Path, message: str, hint: str) -> ProjectError:
    return ProjectError(f"{path.name}: {message}", hint)


def _newer(path: Path, version: int) -> ProjectError:
    return _refuse(path, f"this project was saved by a newer version of Lienzo (project format "
                         f"{version}; this version reads up to {SCHEMA_VERSION}). It was not "
                         f"opened and has not been changed.",
                   "Update Lienzo to open it.")


def inspect_file(path: str | os.PathLike) -> int:
    """Check that `path` is a Lienzo project this version can open; return its schema version.

    Changes nothing: the header is read as plain bytes first, and SQLite only opens the file
    read-only after the header looks right. Raises ProjectError with the reason otherwise.
    """
    path = Path(path)
    if not path.exists():
        raise _refuse(path, "no such file.", f"Check the path: {path}")
    if not path.is_file():
        raise _refuse(path, "this is a folder, not a project file.", "Choose a .lienzo file.")
    try:
        with open(path, "rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        raise _refuse(path, f"the file cannot be read ({exc.strerror}).",
                      "Check that you have permission to read it.") from exc
    if not header:
        raise _refuse(path, "the file is empty, so it is not a Lienzo project.",
                      "Choose another file, or create a new project.")
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise _refuse(path, "this is not a Lienzo project (not an SQLite database file).",
                      "Lienzo projects are .lienzo files made with File > New.")
    app_id = int.from_bytes(header[68:72], "big")
    version = int.from_bytes(header[60:64], "big")
    if app_id != APPLICATION_ID:
        raise _refuse(path, "this is an SQLite database, but not a Lienzo project.",
                      "Choose a .lienzo file made with File > New.")
    if version > SCHEMA_VERSION:
        raise _newer(path, version)
    conn = None
    try:
        conn = _connect_readonly(path)
        # A committed WAL may hold a newer header than the main file: ask SQLite again.
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise _refuse(path, "this is an SQLite database, but not a Lienzo project.",
                          "Choose a .lienzo file made with File > New.")
        if version > SCHEMA_VERSION:
            raise _newer(path, version)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version < 1 or not REQUIRED_TABLES <= tables:
            raise _refuse(path, "the file is marked as a Lienzo project but its tables are "
                                "missing; it is incomplete or damaged.",
                          "Open a backup or an exported copy of the project.")
        if path.stat().st_size <= QUICK_CHECK_MAX_BYTES:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise _refuse(path, "the project file is damaged (" + "; ".join(problems) + ").",
                              "Open a backup or an exported copy of the project.")
        return version
    except sqlite3.DatabaseError as exc:
        raise _refuse(path, f"the project file is damaged or unreadable ({exc}).",
                      "Open a backup or an exported copy of the project.") from exc
    finally:
        # Nothing to clean up: with no side files present the connection was immutable and
        # created none, and existing ones may belong to a live writer.
        if conn is not None:
            conn.close()


def _translate(exc: sqlite3.Error) -> ProjectError:
    text = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        return ProjectError(f"The change was refused by the project file: {text}.",
                            "Check the values given; nothing was changed.")
    if "readonly" in text or "read-only" in text:
        return ProjectError("This project is open read-only, so changes cannot be saved.",
                            "Close the other Lienzo window using it, then open it again.")
    if "full" in text:
        return ProjectError("The disk is full; the last change was not saved.",
                            "Free some disk space, then try again.")
    if "locked" in text or "busy" in text:
        return ProjectError("The project file is busy in another program.",
                            "Close the other program and try again.")
    return ProjectError(f"The project file could not be read or written ({text}).",
                        "If this keeps happening, open a backup or an exported copy.")


class Project:
    """An open project file. Create with `Project.create(path)` or `Project.open(path)`."""

    def __init__(self, path: Path, conn: sqlite3.Connection, *, read_only: bool, file_lock=None):
        self.path = Path(path)
        self.read_only = read_only
        self._conn = conn
        self.db = Database(conn)
        self._lock = threading.RLock()
        self._file_lock = file_lock
        self._subscribers: list[Callable[[Change], None]] = []
        self._pending: list[Change] = []
        self._depth = 0
        self._closed = False

    # == opening and closing ======================================================================
    @classmethod
    def create(cls, path: str | os.PathLike) -> "Project":
        """Create a new, empty project at `path` (never over an existing file) and open it."""
        path = Path(path).expanduser()
        if path.exists() or path.is_symlink():
            raise _refuse(path, "a file with this name already exists.",
                          "Choose another name, or open the existing project.")
        if not path.parent.is_dir():
            raise _refuse(path, f"the folder {path.parent} does not exist.",
                          "Choose another place.")
        # Build in a temporary file and link it into place: a crash never leaves half a project,
        # and link() refuses to replace a file that appeared meanwhile.
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.creating")
        try:
            conn = sqlite3.connect(str(tmp))
            try:
                db = Database(conn)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                MIGRATIONS.apply(db)
                with db.atomic():
                    db["meta"].insert_all([
                        {"key": "created_at", "value": str(_now())},
                        {"key": "created_by", "value": _app_version()},
                    ])
            finally:
                conn.close()
            _place(tmp, path, overwrite=False)
        except OSError as exc:
            raise _refuse(path, f"the project could not be created ({exc.strerror or exc}).",
                          "Check that the folder is writable and the disk is not full.") from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        project = cls.open(path)
        project.audit("project.create", {"path": str(path)})
        return project

    @classmethod
    def open(cls, path: str | os.PathLike, read_only: bool = False) -> "Project":
        """Open an existing project; upgrades an older format (writable opens only).

        Raises ProjectError, leaving the file untouched, for anything that is not a project this
        version can open, and when another process has it open for writing.
        """
        path = Path(path).expanduser()
        version = inspect_file(path)
        if read_only:
            if version < SCHEMA_VERSION:
                raise _refuse(path, "this project uses an older format that must be upgraded "
                                    "before it can be read.",
                              "Open it once normally (not read-only) to upgrade it.")
            return cls._open_read_only(path)
        if not os.access(path, os.W_OK):
            raise _refuse(path, "the file is write-protected, so it cannot be opened for "
                                "changes.", "Open it read-only, or copy it somewhere writable.")
        file_lock = _take_lock(path)
        conn = None
        try:
            conn = sqlite3.connect(str(path), check_same_thread=False, timeout=5.0)
            project = cls(path, conn, read_only=False, file_lock=file_lock)
            project._prepare()
        except BaseException as exc:
            if conn is not None:
                conn.close()
            file_lock.release()
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc) from exc
            raise
        return project

    @classmethod
    def _open_read_only(cls, path: Path) -> "Project":
        # Normally through the WAL, so a live writer's commits are seen. Where SQLite cannot make
        # the shared-memory file (a read-only folder) and no writer is live, read the file as is.
        attempts = [False] if any(p.exists() for p in _side_files(path)[:2]) else [False, True]
        for immutable in attempts:
            conn = sqlite3.connect(_ro_uri(path, immutable), uri=True, check_same_thread=False,
                                   timeout=5.0)
            try:
                conn.execute("PRAGMA query_only = ON")
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                project = cls(path, conn, read_only=True)
                project.db.execute("PRAGMA foreign_keys = ON")
                return project
            except sqlite3.Error as exc:
                conn.close()
                error = exc
        raise _translate(error) from error

    def _prepare(self) -> None:
        db = self.db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise _newer(self.path, version)
        unknown = [m.name for m in MIGRATIONS.applied(db) if m.name not in MIGRATION_NAMES]
        if unknown:  # written by a build with migrations we do not know
            raise _newer(self.path, version)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA foreign_keys = ON")
        # FULL: a commit is on disk before save_document() returns, even if power goes.
        db.execute("PRAGMA synchronous = FULL")
        pending = MIGRATIONS.pending(db)
        if pending:
            # An older Lienzo cannot open the upgraded file: keep a copy it can open.
            backup = self.path.with_name(f"{self.path.name}.v{version}.bak")
            if backup.exists():
                backup = backup.with_name(f"{backup.name}.{int(_now())}")
            _backup_to(self._conn, backup, overwrite=False)
            try:
                with db.atomic():  # all migrations or none (each one is a savepoint inside)
                    MIGRATIONS.apply(db)
            except Exception as exc:
                raise _refuse(self.path, f"upgrading the project format failed ({exc}); the "
                                         "file was left as it was.",
                              "Report this, and keep using the older Lienzo for this project.") \
                    from exc
            self.audit("project.upgrade", {"from_version": version, "to_version": SCHEMA_VERSION,
                                           "migrations": [m.name for m in pending],
                                           "backup": str(backup)})
        self._recover_runs()

    def _recover_runs(self) -> None:
        """Runs still queued or running belonged to a Lienzo that stopped without finishing them."""
        with self.transaction():
            ids = [r[0] for r in self.db.execute(
                "SELECT id FROM runs WHERE status IN ('queued', 'running') ORDER BY id")]
            if not ids:
                return
            now = _now()
            self.db.execute(
                "UPDATE runs SET status = 'interrupted', ended_at = COALESCE(ended_at, ?), "
                "log = COALESCE(log || char(10), '') || ? WHERE status IN ('queued', 'running')",
                [now, "Interrupted: Lienzo stopped before this run finished."])
            for run_id in ids:
                self._changed("runs", "update", run_id)
            self.audit("runs.interrupted", {"run_ids": ids})

    def close(self) -> None:
        """Close the file (checkpointing the WAL into it) and release the writer lock."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if not self.read_only:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("PRAGMA optimize")
                        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.close()
            finally:
                if self._file_lock is not None:
                    self._file_lock.release()
                    self._file_lock = None

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Project":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("read-only" if self.read_only else "open")
        return f"<Project {str(self.path)!r} {state}>"

    @property
    def lock(self) -> threading.RLock:
        """Hold it around direct use of `db` from threads (transaction() holds it already)."""
        return self._lock

    @property
    def schema_version(self) -> int:
        return self._value("PRAGMA user_version")

    # == transactions and change notification ======================================================
    @contextlib.contextmanager
    def transaction(self) -> Iterator["Project"]:
        """Group writes: all of them are committed together, or none. Nests (savepoints).

        Subscribers hear about the changes after the outermost block commits.
        """
        self._check_writable()
        with self._lock:
            self._check_open()
            outer = self._depth == 0
            mark = len(self._pending)
            self._depth += 1
            try:
                with self.db.atomic():
                    yield self
            except BaseException as exc:
                del self._pending[mark:]
                if isinstance(exc, sqlite3.Error):
                    raise _translate(exc) from exc
                raise
            finally:
                self._depth -= 1
            if not outer:
                return
            changes, self._pending = self._pending, []
        self._notify(changes)

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call `callback(Change)` after each commit, on the thread that wrote. Returns an
        unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self.unsubscribe(callback)

    def unsubscribe(self, callback: Callable[[Change], None]) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    def _changed(self, table: str, action: str, row_id: int | None) -> None:
        self._pending.append(Change(table, action, row_id))

    def _notify(self, changes: list[Change]) -> None:
        for change in changes:
            for callback in list(self._subscribers):
                try:
                    callback(change)
                except Exception:  # a broken view must not undo or block a saved change
                    traceback.print_exc()

    def _check_open(self) -> None:
        if self._closed:
            raise ProjectError("The project has been closed.", "Open it again.")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise ProjectError(
                f"{self.path.name} is open read-only, so changes cannot be saved.",
                "It is open for writing elsewhere; close it there, then open it again here.")

    # == small query helpers =======================================================================
    def _rows(self, sql: str, params: Iterable = ()) -> list[dict]:
        with self._lock:
            self._check_open()
            try:
                return list(self.db.query(sql, list(params)))
            except sqlite3.Error as exc:
                raise _translate(exc) from exc

    def _row(self, sql: str, params: Iterable, what: str, row_id: Any) -> dict:
        rows = self._rows(sql, params)
        if not rows:
            raise ProjectError(f"There is no {what} with id {row_id} in this project.",
                               "It may have been deleted; refresh the view.")
        return rows[0]

    def _value(self, sql: str, params: Iterable = ()) -> Any:
        with self._lock:
            self._check_open()
            try:
                row = self.db.execute(sql, list(params)).fetchone()
            except sqlite3.Error as exc:
                raise _translate(exc) from exc
        return None if row is None else row[0]

    def _insert(self, table: str, row: dict) -> int:
        row_id = self.db[table].insert(row).last_pk
        self._changed(table, "insert", row_id)
        return row_id

    def _update(self, table: str, row_id: int, fields: dict, what: str,
                announce: bool = True) -> None:
        cur = self.db.execute(
            f"UPDATE {table} SET " + ", ".join(f'"{k}" = ?' for k in fields) + " WHERE id = ?",
            [*fields.values(), row_id])
        if cur.rowcount == 0:
            raise ProjectError(f"There is no {what} with id {row_id} in this project.",
                               "It may have been deleted; refresh the view.")
        if announce:
            self._changed(table, "update", row_id)

    def _rename(self, table: str, column: str, row_id: int, new_name: str, what: str) -> None:
        new_name = _clean_name(new_name, what)
        with self.transaction():
            old = self._row(f"SELECT {column} FROM {table} WHERE id = ?", [row_id], what, row_id)
            self._update(table, row_id, {column: new_name}, what)
            self.audit(f"{_ENTITY[table]}.rename",
                       {"id": row_id, "from": old[column], "to": new_name})

    def _delete(self, table: str, row_id: int, what: str, details: dict) -> None:
        cur = self.db.execute(f"DELETE FROM {table} WHERE id = ?", [row_id])
        if cur.rowcount == 0:
            raise ProjectError(f"There is no {what} with id {row_id} in this project.",
                               "It may have been deleted already; refresh the view.")
        self._changed(table, "delete", row_id)
        self.audit(f"{_ENTITY[table]}.delete", {"id": row_id, **details})

    # == documents =================================================================================
    def create_document(self, title: str, text: str = "", format: str = "markdown") -> int:
        title = _clean_name(title, "document")
        _check_choice(format, DOCUMENT_FORMATS, "document format")
        now = _now()
        with self.transaction():
            doc_id = self._insert("documents", {"title": title, "format": format, "text": text,
                                                "version": 1, "created_at": now,
                                                "updated_at": now})
            self.db["document_versions"].insert({
                "document_id": doc_id, "version": 1, "text": text, "autosave": 0,
                "created_at": now, "saved_at": now})
        return doc_id

    def list_documents(self) -> list[dict]:
        """All documents, without their text (see get_document), most recently changed first."""
        return self._rows("SELECT id, title, format, version, length(text) AS chars, created_at, "
                          "updated_at FROM documents ORDER BY updated_at DESC, id DESC")

    def get_document(self, doc_id: int) -> dict:
        return self._row("SELECT * FROM documents WHERE id = ?", [doc_id], "document", doc_id)

    def save_document(self, doc_id: int, text: str, autosave: bool = False) -> int:
        """Save `text` as the document's newest version; return that version number.

        An explicit save always keeps a version of its own. An autosave updates the newest version
        in place when that is itself a recent autosave (see AUTOSAVE_COALESCE_S). Saving unchanged
        text adds nothing (an explicit save just marks the newest version as kept).
        """
        if not isinstance(text, str):
            raise ProjectError("A document's text must be a string.", "This is a bug; report it.")
        now = _now()
        with self.transaction():
            doc = self._row("SELECT id, text, version FROM documents WHERE id = ?", [doc_id],
                            "document", doc_id)
            latest = self._rows("SELECT id, version, autosave, created_at FROM document_versions "
                                "WHERE document_id = ? ORDER BY version DESC LIMIT 1", [doc_id])
            latest = latest[0] if latest else None
            if text == doc["text"] and latest is not None:
                if not autosave and latest["autosave"]:
                    self.db.execute("UPDATE document_versions SET autosave = 0 WHERE id = ?",
                                    [latest["id"]])
                return doc["version"]
            if (autosave and latest is not None and latest["autosave"]
                    and now - latest["created_at"] < AUTOSAVE_COALESCE_S):
                version = latest["version"]
                self.db.execute("UPDATE document_versions SET text = ?, saved_at = ? WHERE id = ?",
                                [text, now, latest["id"]])
            else:
                version = doc["version"] + 1
                self.db["document_versions"].insert({
                    "document_id": doc_id, "version": version, "text": text,
                    "autosave": int(bool(autosave)), "created_at": now, "saved_at": now})
            self._update("documents", doc_id, {"text": text, "version": version,
                                               "updated_at": now}, "document")
        return version

    def rename_document(self, doc_id: int, title: str) -> None:
        self._rename("documents", "title", doc_id, title, "document")

    def delete_document(self, doc_id: int) -> None:
        with self.transaction():
            doc = self._row("SELECT title, version FROM documents WHERE id = ?", [doc_id],
                            "document", doc_id)
            self._delete("documents", doc_id, "document", {"title": doc["title"],
                                                           "versions": doc["version"]})

    def document_versions(self, doc_id: int) -> list[dict]:
        """Saved versions, oldest first: version, autosave, note, created_at, saved_at, chars."""
        self._row("SELECT id FROM documents WHERE id = ?", [doc_id], "document", doc_id)
        return self._rows("SELECT version, autosave, note, created_at, saved_at, "
                          "length(text) AS chars FROM document_versions WHERE document_id = ? "
                          "ORDER BY version", [doc_id])

    def get_document_version(self, doc_id: int, version: int) -> str:
        rows = self._rows("SELECT text FROM document_versions WHERE document_id = ? AND "
                          "version = ?", [doc_id, version])
        if not rows:
            self._row("SELECT id FROM documents WHERE id = ?", [doc_id], "document", doc_id)
            raise ProjectError(f"Document {doc_id} has no version {version}.",
                               "Pick a version from the document's history.")
        return rows[0]["text"]

    def restore_document_version(self, doc_id: int, version: int) -> int:
        """Make an earlier version current again, as a new version (history is never rewritten)."""
        with self.transaction():
            text = self.get_document_version(doc_id, version)
            current = self.get_document(doc_id)["version"]
            new_version = current + 1
            now = _now()
            self.db["document_versions"].insert({
                "document_id": doc_id, "version": new_version, "text": text, "autosave": 0,
                "note": f"restored from version {version}", "created_at": now, "saved_at": now})
            self._update("documents", doc_id, {"text": text, "version": new_version,
                                               "updated_at": now}, "document")
            self.audit("document.restore_version", {"id": doc_id, "restored": version,
                                                    "replaced": current, "new": new_version})
        return new_version

    def import_text_file(self, path: str | os.PathLike, title: str | None = None) -> int:
        """Import a text file as a new document (encoding detected); returns its id."""
        path = Path(path)
        try:
            if path.stat().st_size > MAX_TEXT_BYTES:  # refuse before reading it all
                raise ProjectError(f"{path.name} is too large to be a document (more than "
                                   f"{MAX_TEXT_BYTES // 2**20} MB).",
                                   "Split the file, or import it as a data set.")
            data = path.read_bytes()
        except OSError as exc:
            raise ProjectError(f"{path.name} cannot be read ({exc.strerror or exc}).",
                               "Check that the file exists and that you may read it.") from exc
        try:
            text, encoding = decode_text(data)
        except ImportRejected as exc:
            raise ProjectError(f"{path.name}: {exc.message}", exc.hint) from exc
        fmt = "markdown" if path.suffix.lower() in (".md", ".markdown") else "plain"
        with self.transaction():
            doc_id = self.create_document(title or path.stem or path.name, text, fmt)
            self.audit("document.import", {"id": doc_id, "path": str(path),
                                           "encoding": encoding, "bytes": len(data)})
        return doc_id

    # == images ====================================================================================
    def add_image(self, data: bytes, name: str, origin: str = "imported",
                  params: dict | None = None, source_path: str | None = None) -> int:
        """Store image bytes (once per sha256) with a thumbnail; returns the image id.

        Adding bytes that are already stored returns the existing id. Raises ProjectError with the
        reason for data that is not a supported, intact image within the pixel cap.
        """
        self._check_writable()
        _check_choice(origin, IMAGE_ORIGINS, "image origin")
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        existing = self._image_by_sha(sha, origin)
        if existing is not None:
            return existing
        try:
            info = probe_image(data)  # CPU work outside the lock: other threads may go on
        except ImportRejected as exc:
            raise ProjectError(f"{name}: {exc.message}", exc.hint) from exc
        with self.transaction():
            existing = self._image_by_sha(sha, origin)  # another thread may have won the race
            if existing is not None:
                return existing
            self.db.execute("INSERT OR IGNORE INTO image_data (sha256, size, data) "
                            "VALUES (?, ?, ?)",
                            [sha, len(data), data])
            return self._insert("images", {
                "sha256": sha, "name": _clean_name(name or "image", "image"),
                "format": info.format, "width": info.width, "height": info.height,
                "mode": info.mode, "bit_depth": info.bit_depth, "size": len(data),
                "origin": origin, "params": _dumps(params), "source_path": source_path,
                "thumbnail": info.thumbnail, "created_at": _now()})

    def _image_by_sha(self, sha: str, origin: str) -> int | None:
        rows = self._rows("SELECT id, origin FROM images WHERE sha256 = ?", [sha])
        if not rows:
            return None
        row = rows[0]
        if row["origin"] == "dataset" and origin != "dataset":
            # the user imported it in its own right: show it among the project's images
            with self.transaction():
                self._update("images", row["id"], {"origin": origin}, "image")
        return row["id"]

    def import_images(self, paths: Iterable[str | os.PathLike],
                      progress: Callable[[int, int, str], None] | None = None) -> ImportReport:
        """Import image files (folders are searched recursively). Bad files are skipped with the
        reason; the rest are imported. `progress(step, total, message)` may raise to cancel."""
        files = _expand(paths)
        report = ImportReport()
        for index, path in enumerate(files):
            if progress is not None:
                progress(index, len(files), f"Importing {path.name}")
            try:
                size = path.stat().st_size
                if size > MAX_IMPORT_FILE_BYTES:
                    raise ProjectError(f"file too large ({size / 1e9:.1f} GB)", "")
                data = path.read_bytes()
            except OSError as exc:
                report.skipped.append((str(path), f"cannot read the file ({exc.strerror or exc})"))
                continue
            except ProjectError as exc:
                report.skipped.append((str(path), exc.message))
                continue
            try:
                image_id = self.add_image(data, path.name, "imported", source_path=str(path))
            except ProjectError as exc:
                if self.read_only or self._closed:
                    raise
                report.skipped.append((str(path), exc.message.removeprefix(f"{path.name}: ")))
                continue
            if image_id not in report.imported:
                report.imported.append(image_id)
        if progress is not None:
            progress(len(files), len(files), "Import finished")
        if files:
            self.audit("images.import", {"imported": len(report.imported),
                                         "skipped": [list(s) for s in report.skipped]})
        return report

    _IMAGE_COLUMNS = ("id, sha256, name, format, width, height, mode, bit_depth, size, origin, "
                      "params, source_path, created_at")

    def list_images(self, origin: str | None = None, include_dataset: bool = False) -> list[dict]:
        """Images without their bytes, newest first. Images copied in as data set items are left
        out unless asked for (origin="dataset" or include_dataset=True)."""
        sql = f"SELECT {self._IMAGE_COLUMNS} FROM images"
        args: list = []
        if origin is not None:
            _check_choice(origin, IMAGE_ORIGINS, "image origin")
            sql += " WHERE origin = ?"
            args.append(origin)
        elif not include_dataset:
            sql += " WHERE origin != 'dataset'"
        rows = self._rows(sql + " ORDER BY id DESC", args)
        for row in rows:
            row["params"] = _loads(row["params"])
        return rows

    def get_image(self, image_id: int) -> dict:
        row = self._row(f"SELECT {self._IMAGE_COLUMNS} FROM images WHERE id = ?", [image_id],
                        "image", image_id)
        row["params"] = _loads(row["params"])
        return row

    def image_bytes(self, image_id: int) -> bytes:
        """The image file's bytes exactly as imported or generated."""
        return self._row("SELECT d.data FROM images i JOIN image_data d ON d.sha256 = i.sha256 "
                         "WHERE i.id = ?", [image_id], "image", image_id)["data"]

    def thumbnail_bytes(self, image_id: int) -> bytes:
        """A PNG no larger than 256 px on either side."""
        return self._row("SELECT thumbnail FROM images WHERE id = ?", [image_id], "image",
                         image_id)["thumbnail"]

    def rename_image(self, image_id: int, name: str) -> None:
        self._rename("images", "name", image_id, name, "image")

    def delete_image(self, image_id: int) -> None:
        with self.transaction():
            image = self.get_image(image_id)
            users = self._rows(
                "SELECT DISTINCT d.name FROM dataset_items i "
                "JOIN datasets d ON d.id = i.dataset_id "
                "WHERE i.image_id = ? OR i.mask_image_id = ?", [image_id, image_id])
            if users:
                raise ProjectError(
                    f"The image {image['name']} is used by the data set "
                    + ", ".join(repr(u["name"]) for u in users) + " and was not deleted.",
                    "Remove it from the data set first.")
            self._delete("images", image_id, "image", {"name": image["name"],
                                                       "sha256": image["sha256"]})
            self.db.execute("DELETE FROM image_data WHERE sha256 = ? AND NOT EXISTS "
                            "(SELECT 1 FROM images WHERE sha256 = ?)",
                            [image["sha256"], image["sha256"]])

    # == data sets =================================================================================
    def create_dataset(self, name: str, kind: str = "images", storage: str = "copied",
                       source_path: str | os.PathLike | None = None,
                       meta: dict | None = None) -> int:
        """A new, empty data set. A referenced single file (a CSV) is fingerprinted now so a later
        change to it is noticed."""
        name = _clean_name(name, "data set")
        _check_choice(kind, DATASET_KINDS, "data set kind")
        _check_choice(storage, DATASET_STORAGE, "data set storage")
        size = sha = None
        if source_path is not None:
            source_path = str(source_path)
            if storage == "referenced" and os.path.isfile(source_path):
                try:
                    size, sha = file_fingerprint(source_path)
                except OSError as exc:
                    raise ProjectError(f"{source_path} cannot be read ({exc.strerror or exc}).",
                                       "Check that the file exists and may be read.") from exc
        now = _now()
        with self.transaction():
            dataset_id = self._insert("datasets", {
                "name": name, "kind": kind, "storage": storage, "source_path": source_path,
                "source_size": size, "source_sha256": sha, "meta": _dumps(meta),
                "created_at": now, "updated_at": now})
            self.audit("dataset.create", {"id": dataset_id, "name": name, "kind": kind,
                                          "storage": storage, "source_path": source_path})
        return dataset_id

    def add_dataset_items(self, dataset_id: int, items: Iterable[dict]) -> list[int]:
        """Add items in one transaction; returns their ids. An item has split, label, meta and
        either image_id or path (+ size, sha256), optionally mask_image_id or mask_path."""
        with self.transaction():
            self.get_dataset(dataset_id)
            # plain statements: sqlite-utils' insert() costs a savepoint per row
            sql = ("INSERT INTO dataset_items (dataset_id, " + ", ".join(ITEM_FIELDS)
                   + ") VALUES (?" + ", ?" * len(ITEM_FIELDS) + ")")
            ids = []
            for item in items:
                row = _item_row(item)
                ids.append(self._conn.execute(sql, [dataset_id, *row.values()]).lastrowid)
            self.db.execute("UPDATE datasets SET updated_at = ? WHERE id = ?", [_now(), dataset_id])
            self._changed("datasets", "update", dataset_id)
        return ids

    def list_datasets(self) -> list[dict]:
        rows = self._rows("SELECT d.*, (SELECT count(*) FROM dataset_items i WHERE i.dataset_id "
                          "= d.id) AS item_count FROM datasets d ORDER BY d.id DESC")
        for row in rows:
            row["meta"] = _loads(row["meta"])
        return rows

    def get_dataset(self, dataset_id: int) -> dict:
        row = self._row("SELECT * FROM datasets WHERE id = ?", [dataset_id], "data set",
                        dataset_id)
        row["meta"] = _loads(row["meta"])
        splits = self._rows("SELECT coalesce(split, '') AS split, count(*) AS n FROM "
                            "dataset_items WHERE dataset_id = ? GROUP BY 1", [dataset_id])
        row["splits"] = {s["split"]: s["n"] for s in splits}
        row["item_count"] = sum(row["splits"].values())
        return row

    def dataset_items(self, dataset_id: int, split: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM dataset_items WHERE dataset_id = ?", [dataset_id]
        if split is not None:
            sql += " AND split = ?"
            args.append(split)
        rows = self._rows(sql + " ORDER BY id", args)
        for row in rows:
            row["meta"] = _loads(row["meta"])
        return rows

    def update_dataset_item(self, item_id: int, **fields) -> None:
        if not fields:
            return
        row = _item_row(fields, partial=True)
        with self.transaction():
            item = self._row("SELECT dataset_id FROM dataset_items WHERE id = ?", [item_id],
                             "data set item", item_id)
            # announced on the data set, like additions
            self._update("dataset_items", item_id, row, "data set item", announce=False)
            self._changed("datasets", "update", item["dataset_id"])

    def rename_dataset(self, dataset_id: int, name: str) -> None:
        self._rename("datasets", "name", dataset_id, name, "data set")

    def delete_dataset(self, dataset_id: int) -> None:
        """Delete the data set and its items, and the copied images no one else uses."""
        with self.transaction():
            dataset = self.get_dataset(dataset_id)
            image_ids = [r["id"] for r in self._rows(
                "SELECT image_id AS id FROM dataset_items WHERE dataset_id = ? AND image_id IS NOT "
                "NULL UNION SELECT mask_image_id FROM dataset_items WHERE dataset_id = ? AND "
                "mask_image_id IS NOT NULL", [dataset_id, dataset_id])]
            self._delete("datasets", dataset_id, "data set",
                         {"name": dataset["name"], "items": dataset["item_count"]})
            for image_id in image_ids:
                self.db.execute(
                    "DELETE FROM images WHERE id = ? AND origin = 'dataset' AND NOT EXISTS "
                    "(SELECT 1 FROM dataset_items WHERE image_id = ? OR mask_image_id = ?)",
                    [image_id, image_id, image_id])
            self.db.execute("DELETE FROM image_data WHERE sha256 NOT IN "
                            "(SELECT sha256 FROM images)")

    # == models ====================================================================================
    def register_model(self, kind: str, name: str, path: str | os.PathLike,
                       files_sha256: dict | None = None, config: dict | None = None) -> int:
        name = _clean_name(name, "model")
        with self.transaction():
            model_id = self._insert("models", {
                "kind": str(kind), "name": name, "path": str(path),
                "files_sha256": _dumps(files_sha256 or {}), "config": _dumps(config or {}),
                "created_at": _now()})
            self.audit("model.register", {"id": model_id, "kind": kind, "name": name,
                                          "path": str(path)})
        return model_id

    def update_model_config(self, model_id: int, config: dict, details: dict | None = None) -> None:
        """Replace the project's copy of a model's config, when the model's folder was changed after
        it was registered (recalibrated, other maps chosen). Audited, with `details` saying what
        changed."""
        with self.transaction():
            model = self.get_model(model_id)
            self._update("models", model_id, {"config": _dumps(config)}, "model")
            self.audit("model.update", {"id": model_id, "name": model["name"], **(details or {})})

    def list_models(self, kind: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM models", []
        if kind is not None:
            sql += " WHERE kind = ?"
            args.append(kind)
        return [_model(r) for r in self._rows(sql + " ORDER BY id DESC", args)]

    def get_model(self, model_id: int) -> dict:
        return _model(self._row("SELECT * FROM models WHERE id = ?", [model_id], "model",
                                model_id))

    def rename_model(self, model_id: int, name: str) -> None:
        self._rename("models", "name", model_id, name, "model")

    def delete_model(self, model_id: int) -> None:
        """Forget the model (its files on disk are left alone)."""
        with self.transaction():
            model = self.get_model(model_id)
            self._delete("models", model_id, "model", {"name": model["name"],
                                                       "path": model["path"]})

    # == runs ======================================================================================
    def start_run(self, kind: str, params: dict | None = None, status: str = "queued") -> int:
        _check_choice(status, RUN_STATUSES, "run status")
        now = _now()
        with self.transaction():
            return self._insert("runs", {
                "kind": str(kind), "params": _dumps(params or {}), "status": status,
                "started_at": now if status == "running" else None, "created_at": now})

    def update_run(self, run_id: int, status: str | None = None, metrics: dict | None = None,
                   log: str | None = None, started_at: Any = None, ended_at: Any = None) -> None:
        """Change what is given (None leaves a field as it is). `log` replaces the log."""
        fields: dict[str, Any] = {}
        if status is not None:
            _check_choice(status, RUN_STATUSES, "run status")
            fields["status"] = status
        if metrics is not None:
            fields["metrics"] = _dumps(metrics)
        if log is not None:
            fields["log"] = str(log)
        if started_at is not None:
            fields["started_at"] = _as_epoch(started_at)
        if ended_at is not None:
            fields["ended_at"] = _as_epoch(ended_at)
        if not fields:
            return
        with self.transaction():
            self._update("runs", run_id, fields, "run")

    def list_runs(self, kind: str | None = None) -> list[dict]:
        """Runs, newest first, without their logs (see get_run)."""
        sql = ("SELECT id, kind, params, status, metrics, started_at, ended_at, created_at "
               "FROM runs")
        args = []
        if kind is not None:
            sql += " WHERE kind = ?"
            args.append(kind)
        return [_run(r) for r in self._rows(sql + " ORDER BY id DESC", args)]

    def get_run(self, run_id: int) -> dict:
        return _run(self._row("SELECT * FROM runs WHERE id = ?", [run_id], "run", run_id))

    def delete_run(self, run_id: int) -> dict:
        """Delete a run that has ended, with its inspection results and the internal images only
        they used (heat maps, reconstructions). Images the user can see in the project (imported,
        generated) stay. Returns {"results": n, "images": n}."""
        with self.transaction():
            run = self.get_run(run_id)
            if run["status"] in ("queued", "running"):
                raise ProjectError(f"Run {run_id} is still {run['status']} and was not deleted.",
                                   "Cancel it first, or wait until it ends.")
            results = self.inspection_results(run_id)
            owned = {r["heatmap_image_id"] for r in results} | {(r["meta"] or {}).get("recon_image_id")
                                                               for r in results}
            owned.discard(None)
            self._delete("runs", run_id, "run", {"kind": run["kind"], "results": len(results)})
            removed = 0
            for image_id in sorted(owned):
                rows = self._rows("SELECT sha256, origin FROM images WHERE id = ?", [image_id])
                if not rows or rows[0]["origin"] != "dataset" or self._image_in_use(image_id):
                    continue
                self.db.execute("DELETE FROM images WHERE id = ?", [image_id])
                self.db.execute("DELETE FROM image_data WHERE sha256 = ? AND NOT EXISTS "
                                "(SELECT 1 FROM images WHERE sha256 = ?)", [rows[0]["sha256"]] * 2)
                self._changed("images", "delete", image_id)
                removed += 1
        return {"results": len(results), "images": removed}

    def _image_in_use(self, image_id: int) -> bool:
        """Whether a data set, an inspection result (its image, heat map or reconstruction) or a
        generation refers to the image."""
        return bool(self._rows(
            "SELECT 1 FROM dataset_items WHERE image_id = ?1 OR mask_image_id = ?1 "
            "UNION ALL SELECT 1 FROM inspection_results WHERE image_id = ?1 OR heatmap_image_id = ?1 "
            "OR json_extract(meta, '$.recon_image_id') = ?1 "
            "UNION ALL SELECT 1 FROM generations WHERE image_id = ?1 LIMIT 1", [image_id]))

    # == audit =====================================================================================
    def audit(self, action: str, details: dict | None = None, user: str | None = None) -> int:
        """Record who did what. Part of the caller's transaction when there is one."""
        with self.transaction():
            return self._insert("audit", {"time": _now(), "user": user or _user(),
                                          "action": str(action), "details": _dumps(details or {})})

    def audit_log(self, action: str | None = None, limit: int | None = None) -> list[dict]:
        """Audit rows, oldest first (the newest `limit` rows when a limit is given)."""
        sql, args = "SELECT * FROM audit", []
        if action is not None:
            sql += " WHERE action = ?"
            args.append(action)
        if limit is not None:
            sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT ?)"
            args.append(int(limit))
        rows = self._rows(sql + " ORDER BY id", args)
        for row in rows:
            row["details"] = _loads(row["details"])
        return rows

    # == generations and inspection results ========================================================
    def record_generation(self, kind: str, model: str | None, params: dict | None, seed: Any,
                          prompt: str | None, output: str | None, document_id: int | None = None,
                          image_id: int | None = None, run_id: int | None = None) -> int:
        """Provenance of a generated text or image. Seeds are stored as text: torch seeds can
        exceed SQLite's 64-bit integers."""
        with self.transaction():
            return self._insert("generations", {
                "kind": str(kind), "model": model, "params": _dumps(params or {}),
                "seed": None if seed is None else str(seed), "prompt": prompt, "output": output,
                "document_id": document_id, "image_id": image_id, "run_id": run_id,
                "created_at": _now()})

    def list_generations(self, kind: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM generations", []
        if kind is not None:
            sql += " WHERE kind = ?"
            args.append(kind)
        rows = self._rows(sql + " ORDER BY id DESC", args)
        for row in rows:
            row["params"] = _loads(row["params"])
            if row["seed"] is not None and row["seed"].lstrip("-").isdigit():
                row["seed"] = int(row["seed"])
        return rows

    def add_inspection_results(self, run_id: int, rows: Iterable[dict]) -> int:
        """Store scored items of an inspection run in one transaction; returns how many."""
        count = 0
        with self.transaction():
            self._row("SELECT id FROM runs WHERE id = ?", [run_id], "run", run_id)
            sql = ("INSERT INTO inspection_results (run_id, " + ", ".join(RESULT_FIELDS)
                   + ") VALUES (?" + ", ?" * len(RESULT_FIELDS) + ")")
            for row in rows:
                unknown = set(row) - set(RESULT_FIELDS)
                if unknown:
                    raise ProjectError("Unknown inspection result fields: "
                                       + ", ".join(sorted(unknown)) + ".",
                                       "Use " + ", ".join(RESULT_FIELDS) + ".")
                record = {k: row.get(k) for k in RESULT_FIELDS}
                record["meta"] = _dumps(record["meta"])
                self._conn.execute(sql, [run_id, *record.values()])
                count += 1
            self._changed("runs", "update", run_id)
        return count

    def inspection_results(self, run_id: int) -> list[dict]:
        rows = self._rows("SELECT * FROM inspection_results WHERE run_id = ? ORDER BY id",
                          [run_id])
        for row in rows:
            row["meta"] = _loads(row["meta"])
        return rows

    # == the whole project =========================================================================
    def counts(self) -> dict[str, int]:
        """How many of each thing the browser lists (images: those list_images() shows)."""
        return self._rows("""SELECT
            (SELECT count(*) FROM documents) AS documents,
            (SELECT count(*) FROM images WHERE origin != 'dataset') AS images,
            (SELECT count(*) FROM datasets) AS datasets,
            (SELECT count(*) FROM models) AS models,
            (SELECT count(*) FROM runs) AS runs,
            (SELECT count(*) FROM generations) AS generations,
            (SELECT count(*) FROM audit) AS audit""")[0]

    def integrity_check(self) -> list[str]:
        """SQLite's full check; ["ok"] when the file is sound."""
        return [r["integrity_check"] for r in self._rows("PRAGMA integrity_check")]

    def export_copy(self, dest: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write a consistent, self-contained copy of the project (one file, no WAL) to `dest`."""
        dest = Path(dest)
        if dest.resolve() == self.path.resolve():
            raise ProjectError("A project cannot be exported onto itself.",
                               "Choose another file name.")
        _check_destination(dest, overwrite)
        with self._lock:
            self._check_open()
            if not self.read_only:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            _backup_to(self._conn, dest, overwrite)
        if not self.read_only:
            self.audit("project.export", {"dest": str(dest)})
        return dest

    @classmethod
    def import_copy(cls, src: str | os.PathLike, dest: str | os.PathLike) -> Path:
        """Copy the project `src` (checked first) to `dest`, a new file; returns `dest`.

        The copy is upgraded to this version's format when older. Open it with Project.open(dest).
        """
        src, dest = Path(src), Path(dest)
        inspect_file(src)
        _check_destination(dest, overwrite=False)
        try:
            conn = _connect_readonly(src)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        try:
            _backup_to(conn, dest, overwrite=False)
        finally:
            conn.close()
        with cls.open(dest) as project:
            project.audit("project.import", {"source": str(src)})
        return dest


# == module helpers ===============================================================================
def _take_lock(path: Path):
    from filelock import FileLock, Timeout

    # thread_local=False: the GUI may close the project from another thread than opened it.
    file_lock = FileLock(str(path) + LOCK_SUFFIX, timeout=0, thread_local=False)
    try:
        file_lock.acquire()
    except Timeout as exc:
        raise _refuse(path, "the project is already open for writing in another Lienzo window "
                            "or program.",
                      "Close it there, or open it read-only to look at it.") from exc
    except OSError as exc:
        raise _refuse(path, f"the project cannot be locked for writing ({exc.strerror or exc}).",
                      "Check that the folder is writable, or open the project read-only.") from exc
    return file_lock


def _check_destination(dest: Path, overwrite: bool) -> None:
    if not dest.parent.is_dir():
        raise ProjectError(f"The folder {dest.parent} does not exist.", "Choose another place.")
    if (dest.exists() or dest.is_symlink()) and not overwrite:
        raise ProjectError(f"{dest.name} already exists and was not replaced.",
                           "Choose another file name, or delete the existing file first.")


def _backup_to(conn: sqlite3.Connection, dest: Path, overwrite: bool) -> None:
    """Copy through SQLite's backup API (consistent even with a live WAL) into a temporary file,
    then put it in place."""
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        target = sqlite3.connect(str(tmp))
        try:
            conn.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            target.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _place(tmp, dest, overwrite)
    except sqlite3.Error as exc:
        raise _translate(exc) from exc
    except OSError as exc:
        raise ProjectError(f"{dest.name} could not be written ({exc.strerror or exc}).",
                           "Check that the folder is writable and the disk is not full.") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _place(tmp: Path, dest: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)  # fails if dest exists: never replaces a file that appeared meanwhile
    except FileExistsError:
        raise
    except OSError:  # file systems without hard links
        if dest.exists():
            raise FileExistsError(dest)
        os.replace(tmp, dest)


def _expand(paths: Iterable[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*")
                                if q.is_file() and not q.name.startswith(".")))
        else:
            files.append(p)
    return files


def _clean_name(name: Any, what: str) -> str:
    name = str(name or "").strip()
    if not name:
        raise ProjectError(f"A {what} needs a name.", "Type a name.")
    if len(name) > 500:
        raise ProjectError(f"That {what} name is too long ({len(name)} characters).",
                           "Use at most 500 characters.")
    return name


def _check_choice(value: Any, choices: tuple, what: str) -> None:
    if value not in choices:
        raise ProjectError(f"Unknown {what} {value!r}.", "Use one of: " + ", ".join(choices) + ".")


def _item_row(item: dict, partial: bool = False) -> dict:
    unknown = set(item) - set(ITEM_FIELDS)
    if unknown:
        raise ProjectError("Unknown data set item fields: " + ", ".join(sorted(unknown)) + ".",
                           "Use " + ", ".join(ITEM_FIELDS) + ".")
    if not partial and item.get("image_id") is None and item.get("path") is None \
            and item.get("meta") is None:
        raise ProjectError("A data set item needs an image_id, a path or meta (a table row).",
                           "This is a bug in the caller; report it.")
    row = {k: item[k] for k in ITEM_FIELDS if k in item} if partial else \
        {k: item.get(k) for k in ITEM_FIELDS}
    if "path" in row and row["path"] is not None:
        row["path"] = str(row["path"])
    if "mask_path" in row and row["mask_path"] is not None:
        row["mask_path"] = str(row["mask_path"])
    if "meta" in row:
        row["meta"] = _dumps(row["meta"])
    return row


def _model(row: dict) -> dict:
    row["files_sha256"] = _loads(row["files_sha256"]) or {}
    row["config"] = _loads(row["config"]) or {}
    return row


def _run(row: dict) -> dict:
    row["params"] = _loads(row["params"]) or {}
    row["metrics"] = _loads(row["metrics"])
    return row


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers): still record something honest
        return "unknown"


def _app_version() -> str:
    try:
        from importlib.metadata import version

        return version("lienzo")
    except Exception:
        return "dev"
