"""The project file itself: refusing what is not ours, one writer, crashes, upgrades, copies."""

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import AppError
from core.project import SCHEMA_VERSION, Project, ProjectError
from core.project.schema import APPLICATION_ID, MIGRATION_NAMES, MIGRATIONS

HELPER = Path(__file__).with_name("crash_writer.py")
ROOT = Path(__file__).resolve().parents[1]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture
def project_path(tmp_path) -> Path:
    path = tmp_path / "p.lienzo"
    with Project.create(path) as project:
        project.create_document("Welcome", "hello")
    return path


def _assert_refused(path: Path, *words: str) -> ProjectError:
    before_hash, before_files = _digest(path), _listing(path.parent)
    with pytest.raises(ProjectError) as info:
        Project.open(path)
    with pytest.raises(ProjectError):
        Project.open(path, read_only=True)
    assert _digest(path) == before_hash, "a refused file must be left byte-for-byte untouched"
    assert _listing(path.parent) == before_files, "no -wal/-shm/.lock beside a refused file"
    message = str(info.value).lower()
    for word in words:
        assert word in message, message
    assert isinstance(info.value, AppError) and info.value.hint
    return info.value


# -- refusing files ----------------------------------------------------------------------------

def test_create_refuses_existing_file(tmp_path):
    path = tmp_path / "x.lienzo"
    path.write_bytes(b"keep me")
    with pytest.raises(ProjectError, match="already exists"):
        Project.create(path)
    assert path.read_bytes() == b"keep me"


def test_missing_and_folder(tmp_path):
    with pytest.raises(ProjectError, match="no such file"):
        Project.open(tmp_path / "nope.lienzo")
    with pytest.raises(ProjectError, match="folder"):
        Project.open(tmp_path)


def test_empty_file_refused(tmp_path):
    path = tmp_path / "empty.lienzo"
    path.write_bytes(b"")
    _assert_refused(path, "empty")


def test_not_sqlite_refused(tmp_path):
    path = tmp_path / "notes.lienzo"
    path.write_text("just some text, long enough to fill a header " * 10)
    _assert_refused(path, "not a lienzo project", "not an sqlite")


def test_other_sqlite_database_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")  # even a WAL file gets no side files from us
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    _assert_refused(path, "not a lienzo project")


def test_newer_version_refused(project_path):
    conn = sqlite3.connect(project_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    error = _assert_refused(project_path, "newer version")
    assert "update lienzo" in error.hint.lower()


def test_newer_version_only_in_the_wal_is_refused(project_path, tmp_path):
    """A newer Lienzo crashed after upgrading: the main file's header still says the old version."""
    import shutil

    conn = sqlite3.connect(project_path)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for suffix in ("", "-wal"):  # the files as a killed process leaves them
        shutil.copy(f"{project_path}{suffix}", crashed / f"p.lienzo{suffix}")
    conn.close()
    copy = crashed / "p.lienzo"
    header_version = int.from_bytes(copy.read_bytes()[60:64], "big")
    assert header_version == SCHEMA_VERSION
    before = _digest(copy)
    with pytest.raises(ProjectError, match="newer version"):
        Project.open(copy)
    assert _digest(copy) == before


def test_corrupt_and_truncated_refused(project_path, tmp_path):
    data = bytearray(project_path.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    corrupt = tmp_path / "corrupt.lienzo"
    data[page:3 * page] = os.urandom(2 * page)  # garbage over b-tree pages, header intact
    corrupt.write_bytes(bytes(data))
    _assert_refused(corrupt, "damaged")

    truncated = tmp_path / "truncated.lienzo"
    truncated.write_bytes(project_path.read_bytes()[:page + 100])
    _assert_refused(truncated, "damaged")

    short = tmp_path / "short.lienzo"
    short.write_bytes(project_path.read_bytes()[:60])
    _assert_refused(short, "not a lienzo project")


# -- schema, upgrades, crash recovery -----------------------------------------------------------

def test_new_project_markers_and_settings(project_path):
    with Project.open(project_path) as project:
        db = project.db
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert project.schema_version == SCHEMA_VERSION == len(MIGRATION_NAMES)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert [m.name for m in MIGRATIONS.applied(db)] == list(MIGRATION_NAMES)
        names = set(db.table_names())
        for table in ("documents", "document_versions", "images", "image_data", "datasets",
                      "dataset_items", "models", "runs", "audit", "generations",
                      "inspection_results", "passages", "passages_fts"):
            assert table in names
    # the .lock sidecar is all that remains beside a closed project
    assert _listing(project_path.parent) == {"p.lienzo", "p.lienzo.lock"}


def test_older_project_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.lienzo"
    conn = sqlite3.connect(path)
    from sqlite_utils import Database

    db = Database(conn)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    MIGRATIONS.apply(db, stop_before=MIGRATION_NAMES[1])  # a file from the first release
    db.execute("INSERT INTO documents (title, text, created_at, updated_at) VALUES "
               "('Old', 'kept', 0, 0)")
    conn.commit()
    conn.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1

    with pytest.raises(ProjectError, match="older format"):
        Project.open(path, read_only=True)
    with Project.open(path) as project:
        assert project.schema_version == SCHEMA_VERSION
        assert project.get_document(1)["text"] == "kept"
        assert "passages_fts" in project.db.table_names()
        upgrade = project.audit_log(action="project.upgrade")[0]["details"]
        assert upgrade["from_version"] == 1 and upgrade["to_version"] == SCHEMA_VERSION
    # the file as it was before the upgrade is kept beside it, still openable by the old version
    backup = tmp_path / "old.lienzo.v1.bak"
    assert upgrade["backup"] == str(backup)
    conn = sqlite3.connect(backup)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT text FROM documents").fetchone()[0] == "kept"
    conn.close()


def test_upgrade_gives_command_line_inspectors_the_apps_model_kind(tmp_path):
    path = tmp_path / "cli.lienzo"
    conn = sqlite3.connect(path)
    from sqlite_utils import Database

    db = Database(conn)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    MIGRATIONS.apply(db, stop_before="m003_one_kind_for_image_inspectors")
    for kind in ("inspector-image", "inspector-table", "inspector"):
        db.execute("INSERT INTO models (kind, name, path, files_sha256, config, created_at) "
                   "VALUES (?, ?, '/m', '{}', '{}', 0)", [kind, kind])
    conn.commit()
    conn.close()
    with Project.open(path) as project:
        assert sorted((m["name"], m["kind"]) for m in project.list_models()) == [
            ("inspector", "inspector"), ("inspector-image", "inspector"), ("inspector-table", "inspector-table")]


def test_a_failing_upgrade_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "old.lienzo"
    conn = sqlite3.connect(path)
    from sqlite_utils import Database

    db = Database(conn)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    MIGRATIONS.apply(db, stop_before=MIGRATION_NAMES[1])
    conn.commit()
    conn.close()

    from core.project import schema

    def broken(db):
        raise sqlite3.OperationalError("simulated failure in a migration")

    # a later migration that fails after the real second one succeeded
    monkeypatch.setattr(schema.MIGRATIONS, "_migrations",
                        schema.MIGRATIONS._migrations + [
                            type(schema.MIGRATIONS._migrations[0])("m999_broken", broken)])
    with pytest.raises(ProjectError, match="upgrading the project format failed"):
        Project.open(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "passages" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()


def test_unfinished_runs_become_interrupted(project_path):
    with Project.open(project_path) as project:
        running = project.start_run("train", {"epochs": 3}, status="running")
        queued = project.start_run("score", {})
        done = project.start_run("score", {})
        project.update_run(done, status="done", ended_at=time.time())
    with Project.open(project_path, read_only=True) as viewer:  # a viewer does not recover
        assert viewer.get_run(running)["status"] == "running"
    with Project.open(project_path) as project:
        assert project.get_run(running)["status"] == "interrupted"
        assert project.get_run(queued)["status"] == "interrupted"
        assert project.get_run(done)["status"] == "done"
        assert project.get_run(running)["ended_at"] is not None
        assert "Interrupted" in project.get_run(running)["log"]
        assert project.audit_log(action="runs.interrupted")[0]["details"]["run_ids"] == \
            [running, queued]


# -- one writer --------------------------------------------------------------------------------

def _start_holder(path: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, str(HELPER), "hold", str(path)], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return child


def test_second_process_is_refused_then_reads_read_only(project_path):
    child = _start_holder(project_path)
    try:
        with pytest.raises(ProjectError) as info:
            Project.open(project_path)
        text = str(info.value).lower()
        assert "already open" in text and "read-only" in text
        with Project.open(project_path, read_only=True) as viewer:
            assert viewer.read_only
            assert [d["title"] for d in viewer.list_documents()] == ["Welcome"]
            for write in (lambda: viewer.create_document("x"),
                          lambda: viewer.save_document(1, "changed"),
                          lambda: viewer.add_image(b"\x89PNG", "x.png"),
                          lambda: viewer.audit("x", {})):
                with pytest.raises(ProjectError, match="read-only"):
                    write()
            with pytest.raises(ProjectError, match="read-only"):
                with viewer.transaction():
                    pass
            # even raw SQL cannot write through a read-only project
            with pytest.raises(sqlite3.OperationalError):
                viewer.db.execute("DELETE FROM documents")
            # the viewer sees what the writer commits while it looks
            child.stdin.write("doc Written elsewhere\n")
            child.stdin.flush()
            new_id = int(child.stdout.readline())
            assert viewer.get_document(new_id)["title"] == "Written elsewhere"
    finally:
        child.kill()  # SIGKILL: the OS must drop the lock with the process
        child.wait()
    with Project.open(project_path) as project:
        assert project.get_document(1)["text"] == "hello"
        assert project.get_document(new_id)["title"] == "Written elsewhere"
        assert project.integrity_check() == ["ok"]


def test_same_process_second_open_is_refused(project_path):
    with Project.open(project_path):
        with pytest.raises(ProjectError, match="already open"):
            Project.open(project_path)
    Project.open(project_path).close()  # released on close


def test_crash_keeps_every_committed_write(project_path):
    child = subprocess.Popen([sys.executable, str(HELPER), "write", str(project_path)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    committed = []
    try:
        assert child.stdout.readline().strip() == "ready"
        while len(committed) < 100:
            line = child.stdout.readline()
            assert line, "writer ended early"
            committed.append(line.split())
        os.kill(child.pid, signal.SIGKILL)  # mid-way: it is in the middle of its next write
        child.wait()
        # lines it printed before dying were committed too
        committed += [line.split() for line in child.stdout.read().splitlines()]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    # the committed writes live (at least partly) in the WAL the dead writer left behind
    assert Path(str(project_path) + "-wal").stat().st_size > 0
    with Project.open(project_path) as project:
        assert project.integrity_check() == ["ok"]
        assert committed[0][0] == "run"
        for kind, row_id, digest in committed:
            if kind == "run":
                assert project.get_run(int(row_id))["status"] == "interrupted"
            elif kind == "doc":
                doc = project.get_document(int(row_id))
                assert hashlib.sha256(doc["text"].encode()).hexdigest() == digest
                assert doc["version"] == 2
            else:
                assert hashlib.sha256(project.image_bytes(int(row_id))).hexdigest() == digest
        counts = project.counts()
        assert counts["documents"] >= 1 + sum(1 for c in committed if c[0] == "doc")
        assert counts["images"] >= sum(1 for c in committed if c[0] == "image")


# -- whole-project copies ----------------------------------------------------------------------

def test_export_and_import_copy(project_path, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with Project.open(project_path) as project:
        project.save_document(1, "after export? no, before")
        exported = project.export_copy(out / "copy.lienzo")
        assert _listing(out) == {"copy.lienzo"}  # one self-contained file
        with pytest.raises(ProjectError, match="already exists"):
            project.export_copy(out / "copy.lienzo")
        with pytest.raises(ProjectError, match="onto itself"):
            project.export_copy(project_path)
        assert project.audit_log(action="project.export")
    with Project.open(exported) as copy:
        assert copy.get_document(1)["text"] == "after export? no, before"
        assert copy.integrity_check() == ["ok"]

    imported = Project.import_copy(exported, tmp_path / "imported.lienzo")
    with Project.open(imported) as project:
        assert project.get_document(1)["version"] == 2
        assert project.audit_log(action="project.import")[0]["details"]["source"] == \
            str(exported)

    existing = tmp_path / "taken.lienzo"
    existing.write_bytes(b"mine")
    with pytest.raises(ProjectError, match="already exists"):
        Project.import_copy(exported, existing)
    assert existing.read_bytes() == b"mine"
    junk = tmp_path / "junk.lienzo"
    junk.write_bytes(b"not a project at all" * 10)
    with pytest.raises(ProjectError, match="(?i)not a lienzo project"):
        Project.import_copy(junk, tmp_path / "never.lienzo")
    assert not (tmp_path / "never.lienzo").exists()


def test_import_copy_of_a_live_project_includes_its_wal(project_path, tmp_path):
    with Project.open(project_path) as project:
        doc_id = project.create_document("Fresh", "only in the WAL so far")
        wal = Path(str(project_path) + "-wal")
        assert wal.exists() and wal.stat().st_size > 0
        dest = Project.import_copy(project_path, tmp_path / "live-copy.lienzo")
    with Project.open(dest) as copy:
        assert copy.get_document(doc_id)["text"] == "only in the WAL so far"


def test_missing_folders_are_reported(tmp_path, project_path):
    with pytest.raises(ProjectError, match="does not exist"):
        Project.create(tmp_path / "no" / "such" / "p.lienzo")
    with Project.open(project_path) as project:
        with pytest.raises(ProjectError, match="does not exist"):
            project.export_copy(tmp_path / "nowhere" / "copy.lienzo")


def test_paths_with_spaces_and_uri_characters(tmp_path):
    folder = tmp_path / "my work #1 ?&%"
    folder.mkdir()
    path = folder / "proyecto ñ.lienzo"
    with Project.create(path) as project:
        project.create_document("Hola")
    with Project.open(path, read_only=True) as viewer:  # read-only goes through a file: URI
        assert viewer.list_documents()[0]["title"] == "Hola"
    copy = Project.import_copy(path, folder / "copia.lienzo")
    with Project.open(copy) as project:
        assert project.list_documents()[0]["title"] == "Hola"
