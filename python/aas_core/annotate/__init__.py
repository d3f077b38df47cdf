"""Annotating pairs in the browser (``aas annotate``).

:mod:`aas_core.annotate.store` is the durable SQLite store of a run (images,
queued pairs, answers, undo history) and needs only the standard library;
:mod:`aas_core.annotate.server` is the web app, which needs the ``[web]``
extra (Flask and waitress) and imports it only when an app is built.
"""

from .store import (
    ANSWERS,
    SCHEMA_VERSION,
    AlreadyAnswered,
    AnnotationStore,
    NothingToUndo,
    StoreFull,
    StoreLocked,
    StoreReadOnly,
    UnknownPair,
    load_constraints,
)

__all__ = [
    "ANSWERS",
    "SCHEMA_VERSION",
    "AlreadyAnswered",
    "AnnotationStore",
    "NothingToUndo",
    "StoreFull",
    "StoreLocked",
    "StoreReadOnly",
    "UnknownPair",
    "load_constraints",
]
