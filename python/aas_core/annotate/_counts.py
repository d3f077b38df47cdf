"""The answer count as every command says it (``aas catalogue --status``, ``aas refine``,
``aas annotate``), so that one store never reads as two different counts."""

from __future__ import annotations

__all__ = ["answers_text"]


def _n(count, word, plural=None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def answers_text(progress) -> str:
    """``"N answers (S same, D different, C can't tell, K skipped)"``, then
    ``" and E catalogue edits"`` where there are any.

    ``progress`` is :meth:`AnnotationStore.progress` (or a dict with at least "same"
    and "different"). N counts every answered question: same, different, can't tell and
    skipped, as the page's "done" does. A catalogue edit (a merge, a split, a new
    individual) is counted once, however many answers it stored. Where "cant_tell" or
    "skipped" is absent (answers read from a file, which holds only same and different),
    they are left out rather than said to be 0.
    """
    parts = [f"{progress['same']} same", f"{progress['different']} different"]
    total = progress["same"] + progress["different"]
    for key, word in (("cant_tell", "can't tell"), ("skipped", "skipped")):
        if progress.get(key) is not None:
            parts.append(f"{progress[key]} {word}")
            total += progress[key]
    text = f"{_n(total, 'answer')} ({', '.join(parts)})"
    edits = progress.get("edits") or 0
    if edits:
        text += f" and {_n(edits, 'catalogue edit')}"
    return text
