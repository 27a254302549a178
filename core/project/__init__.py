"""The project store: one SQLite file per project, reached only through `Project`."""
