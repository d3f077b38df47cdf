"""Annotating pairs in the browser (``aas annotate``).

:mod:`aas_core.annotate.store` is the durable SQLite store of a run (images,
queued pairs, answers, undo history) and needs only the standard library;
:mod:`aas_core.annotate.server` is the web app, which needs the ``[web]``
extra (Flask and waitress) and imports it only when an app is built.
"""

import importlib

# Imported from .store when first used (PEP 562), so that importing one module of this
# package (aas_core.constraints reads a store's answers through .answers) does not
# import the whole store, which itself needs aas_core.constraints.
_FROM_STORE = (
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
)


def __getattr__(name):
    if name not in _FROM_STORE:
        raise AttributeError(f"module 'aas_core.annotate' has no attribute {name!r}")
    value = getattr(importlib.import_module(".store", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_FROM_STORE))


__all__ = list(_FROM_STORE)
