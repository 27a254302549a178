"""The project file's schema: ordered migrations (sqlite-utils `Migrations`) and the markers
that let Lienzo recognise its own files.

Rules for later issues: never edit a migration once released; append a new function to
`MIGRATIONS` (it runs in one transaction with the record of it) and it bumps `PRAGMA user_version`
to its position, so `SCHEMA_VERSION` follows by itself. A file whose user_version is higher than
ours was written by a newer Lienzo and is refused, untouched.

Conventions: times are REAL seconds since the epoch (UTC); JSON columns are TEXT; booleans are
INTEGER 0/1.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

# "Lien" in ASCII, stored in the SQLite header (offset 68) so a foreign SQLite file is told apart
# from a Lienzo project without opening it.
APPLICATION_ID = 0x4C69656E

MIGRATIONS = Migrations("lienzo")
_STEPS: list[str] = []


def _step(fn):
    """Register a migration; it sets user_version to its 1-based position inside its transaction."""
    position = len(_STEPS) + 1
    _STEPS.append(fn.__name__)

    def run(db: Database) -> None:
        fn(db)
        db.execute(f"PRAGMA user_version = {position}")

    run.__name__ = fn.__name__
    MIGRATIONS(name=fn.__name__)(run)
    return fn


def _script(db: Database, sql: str) -> None:
    # executescript() would COMMIT the migration's transaction; run statement by statement instead.
    for statement in _split(sql):
        db.execute(statement)


def _split(sql: str) -> list[str]:
    """Split on semicolons outside of CREATE TRIGGER ... END blocks."""
    out, buf, in_trigger = [], [], False
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        buf.append(line)
        upper = stripped.upper()
        if upper.startswith("CREATE TRIGGER"):
            in_trigger = True
        if in_trigger:
            if upper.endswith("END;"):
                in_trigger = False
                out.append("\n".join(buf))
                buf = []
        elif stripped.endswith(";"):
            out.append("\n".join(buf))
            buf = []
    if buf:
        out.append("\n".join(buf))
    return out


@_step
def m001_core(db: Database) -> None:
    _script(db, """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);

    CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        format TEXT NOT NULL DEFAULT 'markdown' CHECK (format IN ('markdown', 'plain')),
        text TEXT NOT NULL DEFAULT '',
        version INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    -- Every saved version is kept; documents.text is always equal to the newest version's text.
    CREATE TABLE document_versions (
        id INTEGER PRIMARY KEY,
        document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        text TEXT NOT NULL,
        autosave INTEGER NOT NULL DEFAULT 0,
        note TEXT,
        created_at REAL NOT NULL,
        saved_at REAL NOT NULL,
        UNIQUE (document_id, version)
    );

    -- Image bytes once per content hash; `images` holds the description and thumbnail, so
    -- listing images never reads the (large) bytes.
    CREATE TABLE image_data (
        sha256 TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE REFERENCES image_data(sha256),
        name TEXT NOT NULL,
        format TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        mode TEXT NOT NULL,
        bit_depth INTEGER NOT NULL,
        size INTEGER NOT NULL,
        origin TEXT NOT NULL CHECK (origin IN ('imported', 'generated', 'dataset')),
        params TEXT,
        source_path TEXT,
        thumbnail BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX images_origin ON images(origin);

    -- A data set is copied into the project (items point at images rows) or referenced in place
    -- (items carry path + size + sha256 so a changed file is noticed).
    CREATE TABLE datasets (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('images', 'table')),
        storage TEXT NOT NULL CHECK (storage IN ('copied', 'referenced')),
        source_path TEXT,
        source_size INTEGER,
        source_sha256 TEXT,
        meta TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE dataset_items (
        id INTEGER PRIMARY KEY,
        dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        split TEXT,
        label TEXT,
        image_id INTEGER REFERENCES images(id),
        path TEXT,
        size INTEGER,
        sha256 TEXT,
        mask_image_id INTEGER REFERENCES images(id),
        mask_path TEXT,
        meta TEXT
    );
    CREATE INDEX dataset_items_dataset ON dataset_items(dataset_id, split);
    CREATE INDEX dataset_items_image ON dataset_items(image_id);
    CREATE INDEX dataset_items_mask ON dataset_items(mask_image_id);

    CREATE TABLE models (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        files_sha256 TEXT,
        config TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX models_kind ON models(kind);

    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        params TEXT,
        status TEXT NOT NULL CHECK (status IN
            ('queued', 'running', 'done', 'failed', 'cancelled', 'interrupted')),
        metrics TEXT,
        log TEXT,
        started_at REAL,
        ended_at REAL,
        created_at REAL NOT NULL
    );
    CREATE INDEX runs_kind ON runs(kind);
    CREATE INDEX runs_status ON runs(status);

    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        user TEXT NOT NULL,
        action TEXT NOT NULL,
        details TEXT
    );
    CREATE INDEX audit_time ON audit(time);

    -- Provenance of every generated text or image: enough to reproduce it (seed, params incl.
    -- library versions) and to find it again.
    CREATE TABLE generations (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        model TEXT,
        params TEXT,
        seed TEXT,
        prompt TEXT,
        output TEXT,
        document_id INTEGER REFERENCES documents(id) ON DELETE SET NULL,
        image_id INTEGER REFERENCES images(id) ON DELETE SET NULL,
        run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX generations_kind ON generations(kind);

    CREATE TABLE inspection_results (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        model_id INTEGER REFERENCES models(id) ON DELETE SET NULL,
        item_path TEXT,
        image_id INTEGER REFERENCES images(id) ON DELETE SET NULL,
        score REAL,
        normalized_score REAL,
        verdict TEXT,
        heatmap_image_id INTEGER REFERENCES images(id) ON DELETE SET NULL,
        label TEXT,
        meta TEXT
    );
    CREATE INDEX inspection_results_run ON inspection_results(run_id);
    """)


@_step
def m002_search(db: Database) -> None:
    # Passages of documents for keyword (FTS5) and semantic (embedding) search; the FTS index
    # is an external-content table kept in step by triggers.
    _script(db, """
    CREATE TABLE passages (
        id INTEGER PRIMARY KEY,
        document_id INTEGER REFERENCES documents(id) ON DELETE CASCADE,
        start INTEGER NOT NULL,
        "end" INTEGER NOT NULL,
        text TEXT NOT NULL,
        embedding BLOB,
        model TEXT
    );
    CREATE INDEX passages_document ON passages(document_id);
    CREATE VIRTUAL TABLE passages_fts USING fts5(text, content='passages', content_rowid='id');
    CREATE TRIGGER passages_ai AFTER INSERT ON passages BEGIN
        INSERT INTO passages_fts(rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER passages_ad AFTER DELETE ON passages BEGIN
        INSERT INTO passages_fts(passages_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END;
    CREATE TRIGGER passages_au AFTER UPDATE OF text ON passages BEGIN
        INSERT INTO passages_fts(passages_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO passages_fts(rowid, text) VALUES (new.id, new.text);
    END;
    """)


@_step
def m003_one_kind_for_image_inspectors(db: Database) -> None:
    # The command line registered image inspectors as "inspector-image" while the app lists
    # "inspector": models trained or used from the command line were missing from the app.
    db.execute("UPDATE models SET kind = 'inspector' WHERE kind = 'inspector-image'")


SCHEMA_VERSION = len(_STEPS)
MIGRATION_NAMES = tuple(_STEPS)

# Tables whose absence means the file is not (or no longer) a usable project.
REQUIRED_TABLES = frozenset({
    "meta", "documents", "document_versions", "image_data", "images", "datasets",
    "dataset_items", "models", "runs", "audit", "generations", "inspection_results",
})
