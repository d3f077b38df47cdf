"""Catalogue edits (merge, split, new individual) stored as answers, undone as a whole."""

from __future__ import annotations

import numpy as np

from . import _schema
from ._answers import _CURRENT_OF_PAIR, _as_index_pairs, _check_annotator
from ._base import _now


class _Edits:
    """The catalogue edits of :class:`~aas_core.annotate.store.AnnotationStore`."""

    def apply_operation(
        self, kind, pairs, answers, *, detail="", annotator=None, stay=None
    ) -> dict:
        """Stores a catalogue operation as answers, in one transaction; undone as a whole.

        A merge is "same" answers and a split "different" ones (see
        :mod:`aas_core.catalogue`), so NP3, the samplers and the conflict
        review treat them like any answer. Pairs not yet queued are added
        (sampler "catalogue", the queue's latest cycle); a pair whose current
        answer differs gets the new one (the old stays as history); a pair
        that already has it is left alone.

        Parameters
        ----------
        kind : "merge", "split" or "new_individual" (a new season's photo that none of
            the known individuals shown is)
        pairs : (m, 2) int array of image indices, m >= 1 (never modified)
        answers : sequence of m answers, each "same" or "different"
        detail : str, what the person did, for the record
        stay : sequence of image indices, optional: a split's photos that stayed in the
            identity (one row each; the split's answers stay O(photos moved))
        annotator : str, optional

        Returns
        -------
        dict: operation (its id), answers (how many were written), unchanged
        """
        owner = "AnnotationStore.apply_operation"
        if kind not in _schema.OPERATIONS:
            raise ValueError(
                f"{owner}: 'kind' must be one of {', '.join(map(repr, _schema.OPERATIONS))}; "
                f"got {kind!r}."
            )
        arr = _as_index_pairs(pairs, self.n_images, owner)
        answers = list(answers)
        if len(arr) == 0 or len(answers) != len(arr):
            raise ValueError(
                f"{owner}: give one answer per pair, at least one; got {len(arr)} pairs and "
                f"{len(answers)} answers."
            )
        if any(a not in ("same", "different") for a in answers):
            raise ValueError(f"{owner}: each answer must be 'same' or 'different'.")
        if not isinstance(detail, str):
            raise TypeError(f"{owner}: 'detail' must be a string.")
        stay = [] if stay is None else sorted({int(i) for i in np.asarray(stay).reshape(-1)})
        if stay and (stay[0] < 0 or stay[-1] >= self.n_images):
            raise ValueError(f"{owner}: 'stay' holds an image index outside [0, {self.n_images}).")
        annotator = _check_annotator(annotator, owner)

        def write(conn):
            now = _now()
            cycle = conn.execute("SELECT COALESCE(MAX(cycle), 0) FROM pairs").fetchone()[0]
            op = conn.execute(
                "INSERT INTO operations (kind, detail, annotator, done_at) VALUES (?, ?, ?, ?)",
                (kind, detail, annotator, now),
            ).lastrowid
            written = unchanged = 0
            for (i, j), ans in zip(arr.tolist(), answers):
                i, j = min(i, j), max(i, j)
                conn.execute(
                    "INSERT OR IGNORE INTO pairs (i, j, sampler, cycle, prob, pool, kind, "
                    "added_at) VALUES (?, ?, 'catalogue', ?, NULL, '', ?, ?)",
                    (i, j, cycle, kind, now),
                )
                pid = conn.execute("SELECT id FROM pairs WHERE i = ? AND j = ?", (i, j)).fetchone()
                cur = conn.execute(_CURRENT_OF_PAIR, (pid[0],)).fetchone()
                if cur is not None and cur[4] == ans:
                    unchanged += 1
                    continue
                conn.execute(
                    "INSERT INTO answers (pair_id, answer, annotator, answered_at, replaces, "
                    "operation) VALUES (?, ?, ?, ?, ?, ?)",
                    (pid[0], ans, annotator, now, None if cur is None else cur[0], op),
                )
                written += 1
            conn.executemany(
                "INSERT INTO operation_photos (operation_id, image) VALUES (?, ?)",
                [(op, i) for i in stay],
            )
            return {"operation": op, "answers": written, "unchanged": unchanged}

        return self._write(write)

    def operation_photos(self, operations=None) -> dict:
        """{operation id: (k,) int64 images} of the operations that recorded photos (a
        split's photos that stayed); only ``operations`` (ids) when given, so a build
        reads the photos of the splits in effect, not of every split ever undone."""
        if operations is None:
            rows = self._read(
                "SELECT operation_id, image FROM operation_photos ORDER BY operation_id, image"
            )
        else:
            rows = []
            for op in sorted({int(o) for o in operations}):
                rows += self._read(
                    "SELECT operation_id, image FROM operation_photos WHERE operation_id = ? "
                    "ORDER BY image",
                    (op,),
                )
        out = {}
        for op, image in rows:
            out.setdefault(int(op), []).append(int(image))
        return {k: np.asarray(v, np.int64) for k, v in out.items()}
