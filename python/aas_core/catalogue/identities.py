"""The catalogue: the refined clustering as named, stable identities.

Identities are the clusters of the chosen base clustering (DBSCAN by default)
refined by NP3 with every answer in the store; an outlier is an identity of
one image. Clusters change with every answer, so each identity keeps a stable
number (shown as ``NY-0007``) through its *anchors*: the images it held when
it was last recorded. Each time the catalogue is built, identities claim the
current clusters greedily by how many of their anchors each holds (most
first, then the older identity); an identity whose cluster was claimed by
another was merged into it (its number is kept as an alias, and it comes
back if an undo splits them again); a cluster nobody claims is a new
identity. Claimed identities' anchors then follow their cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validation import check_option
from ..annotate.store import image_file_of
from ..refine import np3
from .records import (
    check_name,
    load_records,
    record_anchors,
    record_checked,
    record_name,
)

__all__ = ["Catalogue", "Identity", "build_catalogue", "code_of"]

_CLUSTERINGS = ("dbscan", "finch")
PREFIX = "NY"


def code_of(number) -> str:
    """The default name of identity ``number``: NY-0007."""
    return f"{PREFIX}-{int(number):04d}"


@dataclass(frozen=True)
class Identity:
    """One individual of the catalogue.

    number : int, stable; code : "NY-0007"; name : the person's name, or the code;
    images : (m,) int64 image rows, ascending; checked : whether a person marked it
    as checked; absorbed : numbers of identities merged into this one.
    """

    number: int
    code: str
    name: str
    images: np.ndarray
    checked: bool = False
    absorbed: tuple = field(default=())

    @property
    def named(self) -> bool:
        return self.name != self.code


class Catalogue:
    """The identities of a store at one moment (see :func:`build_catalogue`).

    Attributes
    ----------
    identities : list of Identity, by number
    numbers : (n,) int64, the identity number of each image
    image_paths : list of str, as the store lists them
    clustering, merge_rule : how the identities were made (``clustering`` and ``merge``
        of :func:`build_catalogue`)
    """

    def __init__(
        self, store, identities, numbers, image_paths, *, clustering, merge, clusters=None
    ):
        self._store = store
        self._clusters = clusters
        self._roots = store.image_roots()
        self.clustering, self.merge_rule = clustering, merge
        self.identities = identities
        self.numbers = numbers
        self.image_paths = image_paths
        self._by_number = {}
        for ident in identities:
            self._by_number[ident.number] = ident
            for k in ident.absorbed:
                self._by_number.setdefault(k, ident)

    def __len__(self) -> int:
        return len(self.identities)

    def __repr__(self) -> str:
        named = sum(i.named for i in self.identities)
        return (
            f"Catalogue({len(self.image_paths)} images, {len(self.identities)} identities, "
            f"{named} named)"
        )

    def identity(self, number) -> Identity:
        """The identity with this number (or the one it was merged into)."""
        try:
            return self._by_number[int(number)]
        except (KeyError, TypeError, ValueError):
            raise KeyError(f"no identity {number!r} in the catalogue") from None

    def rename(self, number, name, *, annotator=None) -> None:
        """Names an identity ('' gives back its number); stored in the store at once.

        A name another identity already has is refused (ValueError).
        """
        ident = self.identity(number)
        name = check_name(name, "Catalogue.rename")
        names = load_records(self._store).names  # now, not when this snapshot was taken
        for other in self.identities:
            if other.number == ident.number or not name:
                continue
            if name in (names.get(k) for k in (other.number, *other.absorbed)):
                raise ValueError(
                    f"Catalogue.rename: {other.code} is already called {name!r}; choose "
                    "another name, or merge the two identities."
                )
        record_name(self._store, ident.number, name, annotator)

    def mark_checked(self, number, checked=True, *, annotator=None) -> None:
        """Marks an identity as checked by a person (or not); stored in the store at once."""
        if not isinstance(checked, (bool, np.bool_)):
            raise TypeError(f"Catalogue.mark_checked: 'checked' must be a bool; got {checked!r}.")
        record_checked(self._store, self.identity(number).number, checked, annotator)

    def merge(self, a, b, *, annotator=None) -> dict:
        """Says identities ``a`` and ``b`` are one individual: a "same" answer between them.

        Stored at once as a catalogue operation (undo reverts it as a
        whole); NP3 then joins the two clusters, and the older number stays.
        Returns the store's record (see :meth:`AnnotationStore.apply_operation`).
        """
        ia, ib = self.identity(a), self.identity(b)
        if ia is ib:
            raise ValueError(f"Catalogue.merge: {ia.code} and {ib.code} are already one identity.")
        pair = [[int(ia.images[0]), int(ib.images[0])]]
        self._refuse_contradiction("Catalogue.merge", pair, [True])
        return self._store.apply_operation(
            "merge", pair, ["same"], detail=f"{ia.code} + {ib.code}", annotator=annotator
        )

    def split(self, number, images, *, annotator=None) -> dict:
        """Takes ``images`` (image rows of identity ``number``) out into an identity of their own.

        Stored as "different" answers between each image taken out and each
        one that stays, plus "same" answers joining the images taken out, as
        one catalogue operation (undo reverts it as a whole).
        """
        ident = self.identity(number)
        members = set(ident.images.tolist())
        try:
            out = sorted({int(i) for i in np.asarray(images).reshape(-1).tolist()})
        except (TypeError, ValueError):
            raise TypeError("Catalogue.split: 'images' must be image row numbers.") from None
        stray = [i for i in out if i not in members]
        if not out or stray:
            raise ValueError(
                f"Catalogue.split: 'images' must be some of {ident.code}'s images; "
                + (f"{stray[:5]} are not." if stray else "none given.")
            )
        stay = sorted(members - set(out))
        if not stay:
            raise ValueError(f"Catalogue.split: that would take every image out of {ident.code}.")
        pairs = [[i, j] for i in out for j in stay] + [[out[0], k] for k in out[1:]]
        answers = ["different"] * (len(out) * len(stay)) + ["same"] * (len(out) - 1)
        self._refuse_contradiction("Catalogue.split", pairs, [a == "same" for a in answers])
        return self._store.apply_operation(
            "split", pairs, answers, detail=f"{out} out of {ident.code}", annotator=annotator
        )

    def image_file(self, index, images_dir) -> Path:
        """The file of image ``index``: ``images_dir / path``, or under the folder it was
        added from (a new season)."""
        return image_file_of(self._roots, index, self.image_paths[index], images_dir)

    def estimate_missed(self, **kwargs) -> dict:
        """:func:`aas_core.catalogue.estimate_missed` for this catalogue and its answers."""
        from .estimate import estimate_missed

        return estimate_missed(self, self._clusters, self._store.constraints(), **kwargs)

    def _refuse_contradiction(self, owner, pairs, same):
        """ValueError, and nothing stored, when the new answers contradict the answers given."""
        from ..constraints import ContradictionTracker

        told = self._store.answers()
        told = [a for a in told if a["answer"] in ("same", "different")]
        tracker = ContradictionTracker()
        for a in told:
            tracker.add(a["i"], a["j"], a["answer"] == "same")
        for (i, j), s in zip(pairs, same):
            c = tracker.add(int(i), int(j), bool(s))
            if c is None:
                continue
            because = [told[r] for r in c["because"] if r < len(told)]
            said = "; ".join(
                f"answer {b['answer_id']}: #{b['i']} and #{b['j']} {b['answer']}" for b in because
            )
            raise ValueError(
                f"{owner}: #{i} and #{j} would be {'one' if s else 'two'} individual"
                f"{'' if s else 's'}, but earlier answers say otherwise ({said}); nothing was "
                "changed. Change those answers first (the conflict review), then try again."
            )

    def rows(self) -> list:
        """[image_path, code, name] for every image, in image order."""
        out = []
        for path, k in zip(self.image_paths, self.numbers.tolist()):
            ident = self._by_number[k]
            out.append([path, ident.code, ident.name])
        return out


def refined_partition(clusters, constraints, *, clustering="dbscan", merge="clusters"):
    """The base clustering refined by the answers, outliers as singletons: (n,) int64 >= 0."""
    check_option("clustering", clustering, _CLUSTERINGS, owner="build_catalogue")
    base = clusters.labels_a if clustering == "dbscan" else clusters.labels_b
    labels = np3(base, constraints, clusters.X, on_conflict="drop_oldest", merge=merge)
    labels = np.asarray(labels, np.int64).copy()
    noise = np.flatnonzero(labels < 0)
    labels[noise] = labels.max(initial=-1) + 1 + np.arange(len(noise))
    return labels


def build_catalogue(
    store, clusters, *, clustering="dbscan", merge="clusters", record=True
) -> Catalogue:
    """The store's identities now: its answers folded into ``clusters`` by NP3.

    Parameters
    ----------
    store : AnnotationStore (schema version 2)
    clusters : ClusterState of the store's embeddings (:func:`aas_core.cluster_features`)
    clustering : "dbscan" (default) or "finch", the base partition refined
    merge : NP3's merge rule (see :func:`aas_core.np3`)
    record : bool
        Write new identity numbers and moved anchors to the store (one
        transaction), so the numbers stay the same next time. Without it the
        numbers new identities would get are shown but not kept.
    """
    n = store.n_images
    if len(clusters.X) != n:
        raise ValueError(
            f"build_catalogue: 'clusters' holds {len(clusters.X)} images but the store "
            f"{str(store.path)!r} lists {n}."
        )
    labels = refined_partition(clusters, store.constraints(), clustering=clustering, merge=merge)
    rec = load_records(store)
    members = _members(labels)
    claims, absorbed = _claim(labels, rec.anchors)
    unclaimed = sorted(set(members) - set(claims), key=lambda c: members[c][0])
    new = [members[lab] for lab in unclaimed]
    changed = {
        num: members[lab]
        for lab, num in claims.items()
        if set(members[lab].tolist()) != rec.anchors[num]
    }
    if record:
        new_numbers = record_anchors(store, new, changed)
    else:
        new_numbers = list(range(rec.next_number, rec.next_number + len(new)))
    owner = {**claims, **dict(zip(unclaimed, new_numbers))}
    numbers = np.empty(n, np.int64)
    identities = []
    for lab, num in sorted(owner.items(), key=lambda kv: kv[1]):
        numbers[members[lab]] = num
        merged = tuple(sorted(absorbed.get(num, ())))
        name = rec.names.get(num, "") or next(
            (rec.names[k] for k in merged if rec.names.get(k)), ""
        )
        identities.append(
            Identity(
                number=num,
                code=code_of(num),
                name=name or code_of(num),
                images=members[lab],
                checked=rec.checked.get(num, False),
                absorbed=merged,
            )
        )
    return Catalogue(
        store,
        identities,
        numbers,
        store.image_paths(),
        clustering=clustering,
        merge=merge,
        clusters=clusters,
    )


def _members(labels) -> dict:
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return {int(labels[g[0]]): np.sort(g) for g in np.split(order, cuts)}


def _claim(labels, anchors):
    """Greedy one-to-one: (cluster -> number, number -> [numbers merged into it])."""
    touched = {}  # number -> (clusters its anchors are in, how many in each)
    for num, images in anchors.items():
        idx = np.fromiter(images, np.int64, len(images))
        idx = idx[idx < len(labels)]
        if len(idx):
            touched[num] = np.unique(labels[idx], return_counts=True)
    overlap = sorted(
        (-int(c), num, int(lab))
        for num, (labs, counts) in touched.items()
        for lab, c in zip(labs, counts)
    )
    claims, taken = {}, set()
    for _, num, lab in overlap:
        if lab not in claims and num not in taken:
            claims[lab] = num
            taken.add(num)
    absorbed = {}
    for num, (labs, counts) in touched.items():
        if num not in taken:  # every cluster it touches is claimed: it went into the largest
            holder = claims[int(labs[np.argmax(counts)])]
            absorbed.setdefault(holder, []).append(num)
    return claims, absorbed
