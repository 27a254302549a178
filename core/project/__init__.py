"""The project store: one SQLite file per project (`*.lienzo`), reached only through `Project`.

`Project.create(path)` / `Project.open(path, read_only=False)` give an open project; use it as a
context manager or call `close()`. Opening first reads the file's header as plain bytes and then
checks it with a read-only SQLite connection, so a file that is empty, not SQLite, another
program's database, damaged, or written by a newer Lienzo is refused with a `ProjectError` and
left byte-for-byte as it was. A writable open takes an OS lock on `<file>.lock` (released by the
OS if the process dies): a second writer is refused and told to open read-only, where every write
raises `ProjectError`. Older formats are upgraded by ordered migrations (`schema.py`); runs left
queued or running by a crash become `interrupted`.

One SQLite connection per project, guarded by an `RLock`, so any thread may call any method.
Every write method is one transaction; `with project.transaction():` groups several (nesting is
fine). After a commit, `subscribe(cb)` callbacks get `Change(table, action, row_id)` on the
writing thread. Destructive or important actions (delete, rename, restore, imports, exports,
model registration) leave an `audit` row with the user's login name.

What it stores: documents with every saved version; images (bytes once per sha256, an 8-bit PNG
thumbnail, size, format, mode, bit depth, origin, generation parameters); data sets copied in or
referenced by path + size + sha256, and their items; models; runs; the audit log; generation
provenance; inspection results; passages with an FTS5 index for search. Times are epoch seconds.
`project.db` is the underlying `sqlite_utils.Database` for core code that needs its own queries
(hold `project.lock`, or write inside `project.transaction()`).
"""

from core.project.schema import APPLICATION_ID, SCHEMA_VERSION
from core.project.store import (Change, ImportReport, Project, ProjectError, file_fingerprint,
                                inspect_file)

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "Change", "ImportReport", "Project",
           "ProjectError", "file_fingerprint", "inspect_file"]
