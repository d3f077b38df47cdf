"""The catalogue: the answers and the clustering as named, stable identities with evidence.

Identities are the clusters of the chosen base clustering (DBSCAN by default)
refined by every answer in the store (:mod:`aas_core.catalogue.evidence`:
mixed clusters dissolved, NP3 along the kNN graph); an outlier is an
identity of one photo. Each identity says which of its photos answers
verified (joined by "same" answers to its reference photo) and which the
clustering only proposes.

Clusters change with every answer, so each identity keeps a stable number
(shown as ``NY-0007``) through its *anchors*: the images it held when it was
last recorded (all of them up to 256, else a fixed-hash sample of 256, so
an edit of a huge identity writes few rows). Each time the catalogue is built, identities claim the
current clusters greedily by how many of their anchors each holds (most
first, then the older identity); an identity whose cluster was claimed by
another was merged into it (its number is kept as an alias, and it comes
back if an undo splits them again); a cluster nobody claims is a new
identity. Claimed identities' anchors then follow their cluster.

Names and checked marks belong to photos: the photos an identity had when
it was named (checked). After any recomputation a name goes to the identity
holding most of its photos, and only when those photos, with the photos
answers joined to them, are at least half of that identity; otherwise the
identity shows the name as a conflict (``Identity.conflict``) and carries
no name. A checked mark holds while every photo of the identity was checked
or is joined to a checked photo by answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..annotate.store import image_file_of
from .evidence import (
    must_link_components,
    read_answers,
    reference_photos,
    refine_identities,
    verified_mask,
)
from .records import (
    anchor_sample,
    check_name,
    load_records,
    record_anchors,
    record_checked,
    record_name,
)

__all__ = [
    "Catalogue",
    "Identity",
    "LiveCatalogue",
    "StaleIdentity",
    "build_catalogue",
    "code_of",
    "describe_change",
]

PREFIX = "NY"


def code_of(number) -> str:
    """The default name of identity ``number``: NY-0007."""
    return f"{PREFIX}-{int(number):04d}"


class StaleIdentity(ValueError):
    """An edit names an identity (or its photos) as it was, not as it is now: e.g. a page
    opened before another person merged it away. Nothing was changed."""


@dataclass(frozen=True)
class Identity:
    """One individual of the catalogue.

    number : int, stable; code : "NY-0007"; name : the person's name, or the code;
    images : (m,) int64 image rows, ascending; checked : whether a person marked it
    as checked (and no photo joined it since); absorbed : numbers of identities
    merged into this one; reference : the photo its questions are asked against;
    verified : (m,) bool, for each image whether "same" answers join it to the
    reference; conflict : '' or why a name or check given to its photos does not
    apply (e.g. the named photos are now a small part of it).
    """

    number: int
    code: str
    name: str
    images: np.ndarray
    checked: bool = False
    absorbed: tuple = field(default=())
    reference: int = -1
    verified: np.ndarray = field(default=None)
    conflict: str = ""

    @property
    def named(self) -> bool:
        return self.name != self.code

    @property
    def n_verified(self) -> int:
        return 0 if self.verified is None else int(self.verified.sum())

    @property
    def status(self) -> str:
        """ "verified" (every photo joined by answers), "partly verified", "proposed" (the
        clustering's guess, no photo joined) or "single" (one photo: unsorted)."""
        if len(self.images) < 2:
            return "single"
        v = self.n_verified
        return "verified" if v == len(self.images) else "partly verified" if v else "proposed"


class Catalogue:
    """The identities of a store at one moment (see :func:`build_catalogue`).

    Attributes
    ----------
    identities : list of Identity, by number
    numbers : (n,) int64, the identity number of each image
    verified : (n,) bool, whether answers join each image to its identity's reference
    dissolved : (n,) bool, images of clusters that pair-question answers showed to be
        mixes of animals (unsorted now, unless answers join them to others)
    embedding : int, the store's embedding the clusters come from (the id of its row in
        the ``embeddings`` history; 0 for a store that records none)
    calibration_id, calibration_X : the embedding the status's calibration checks are
        drawn and read in, and its unit features (:func:`calibration_embedding`;
        without one, the clusters' own)
    image_paths : list of str, as the store lists them
    answers : the store's answers it was built from (:class:`.evidence.Answers`)
    clustering, merge_rule : how the identities were made (the base clustering, and the
        merge rule NP3 applied to pair questions: "clusters" or "nearest")
    """

    def __init__(
        self,
        store,
        identities,
        numbers,
        image_paths,
        *,
        clustering,
        merge,
        clusters=None,
        answers=None,
        verified=None,
        dissolved=None,
        embedding=0,
        calibration=None,
    ):
        self._store = store
        self._clusters = clusters
        self._roots = store.image_roots()
        self.clustering, self.merge_rule = clustering, merge
        self.identities = identities
        self.numbers = numbers
        self.image_paths = image_paths
        self.answers = answers
        n = len(numbers)
        self.verified = np.zeros(n, bool) if verified is None else verified
        self.dissolved = np.zeros(n, bool) if dissolved is None else dissolved
        self.embedding = embedding
        self._calibration = calibration  # looked up when first needed (the status)
        self._by_number = {}
        for ident in identities:
            self._by_number[ident.number] = ident
            for k in ident.absorbed:
                self._by_number.setdefault(k, ident)

    def __len__(self) -> int:
        return len(self.identities)

    def _calibration_parts(self):
        if self._calibration is None:  # read only when the status asks for it
            self._calibration = calibration_embedding(self._store)
        cid, X = self._calibration
        if X is not None and (self._clusters is None or len(X) != len(self._clusters.X)):
            X = None
        return cid, X if X is not None or self._clusters is None else self._clusters.X

    @property
    def calibration_id(self) -> int:
        return self._calibration_parts()[0]

    @property
    def calibration_X(self):
        """The features calibration checks are drawn and read in (see
        :func:`calibration_embedding`; the clusters' own without one)."""
        return self._calibration_parts()[1]

    def __repr__(self) -> str:
        named = sum(i.named for i in self.identities)
        return (
            f"Catalogue({len(self.image_paths)} images, {len(self.identities)} identities, "
            f"{named} named)"
        )

    @property
    def clusters(self):
        """The ClusterState the catalogue was built on (its features and kNN graph)."""
        return self._clusters

    def identity(self, number) -> Identity:
        """The identity with this number (or the one it was merged into)."""
        try:
            return self._by_number[int(number)]
        except (KeyError, TypeError, ValueError):
            raise KeyError(f"no identity {number!r} in the catalogue") from None

    def _edited(self, number, owner) -> Identity:
        """The identity an edit names, which must be one now (not merged away or gone)."""
        try:
            ident = self.identity(number)
        except KeyError:
            known = isinstance(number, (int, np.integer)) and 0 < number < 2**63
            known = known and self._store._read(
                "SELECT 1 FROM identities WHERE id = ?", (int(number),)
            )
            if not known:
                raise
            raise StaleIdentity(
                f"{owner}: {code_of(number)} is no longer an identity: its photos are in "
                "other identities now (after an undo or new answers); nothing was changed. "
                "Reload to see the catalogue as it is now."
            ) from None
        if ident.number != int(number):
            named = f" ({ident.name})" if ident.named else ""
            raise StaleIdentity(
                f"{owner}: {code_of(number)} is no longer an identity: it was merged into "
                f"{ident.code}{named}; nothing was changed. Reload to see the catalogue as it "
                "is now."
            )
        return ident

    def counts(self) -> dict:
        """How many identities of each status, and photos verified / unsorted."""
        out = dict.fromkeys(("verified", "partly verified", "proposed", "single"), 0)
        for ident in self.identities:
            out[ident.status] += 1
        out["photos_verified"] = int(self.verified.sum())
        out["photos_unsorted"] = out["single"]
        return out

    def rename(self, number, name, *, annotator=None) -> None:
        """Names an identity ('' gives back its number); stored in the store at once.

        The name is given to the identity's photos as they are now (see the
        module doc). A name another identity already has, or one that reads as
        an identity code, is refused (ValueError).
        """
        ident = self._edited(number, "Catalogue.rename")
        name = check_name(name, "Catalogue.rename")
        names = load_records(self._store).names  # now, not when this snapshot was taken
        mine = {ident.number, *ident.absorbed}
        taken = sorted(k for k, v in names.items() if name and v == name and k not in mine)
        if taken:
            raise ValueError(
                f"Catalogue.rename: {code_of(taken[0])} is already called {name!r}; choose "
                "another name, or merge the two identities."
            )
        record_name(self._store, ident.number, name, ident.images.tolist(), annotator)

    def mark_checked(self, number, checked=True, *, annotator=None) -> None:
        """Marks an identity as checked by a person (or not), over its photos as they are
        now; stored in the store at once."""
        if not isinstance(checked, (bool, np.bool_)):
            raise TypeError(f"Catalogue.mark_checked: 'checked' must be a bool; got {checked!r}.")
        ident = self._edited(number, "Catalogue.mark_checked")
        record_checked(self._store, ident.number, checked, ident.images.tolist(), annotator)

    def merge(self, a, b, *, annotator=None) -> dict:
        """Says identities ``a`` and ``b`` are one individual: a "same" answer between them.

        Stored at once as a catalogue operation (undo reverts it as a
        whole): one "same" answer between the two reference photos. A merge
        edit joins the two whole identities (whatever the merge rule), and the
        older number stays. Returns the store's record (see
        :meth:`AnnotationStore.apply_operation`).
        """
        ia, ib = self._edited(a, "Catalogue.merge"), self._edited(b, "Catalogue.merge")
        if ia is ib:
            raise ValueError(f"Catalogue.merge: {ia.code} and {ib.code} are already one identity.")
        pair = [[int(ia.reference), int(ib.reference)]]
        self._refuse_contradiction("Catalogue.merge", pair, [True])
        # a merge joins the whole identities: no answer may say two of their photos differ
        told = read_answers(self._store)  # now, not when this snapshot was taken
        if len(told):
            in_a, in_b = np.isin(told.pairs, ia.images), np.isin(told.pairs, ib.images)
            across = ~told.same & ((in_a[:, 0] & in_b[:, 1]) | (in_b[:, 0] & in_a[:, 1]))
            if across.any():
                r = int(np.flatnonzero(across)[0])
                i, j = told.pairs[r].tolist()
                raise ValueError(
                    f"Catalogue.merge: {ia.code} and {ib.code} would be one individual, but "
                    f"answer {int(told.answer_id[r])}: #{i} and #{j} different; nothing was "
                    "changed. Change that answer first (the conflict review), or split the "
                    "photos out first."
                )
        return self._store.apply_operation(
            "merge", pair, ["same"], detail=f"{ia.code} + {ib.code}", annotator=annotator
        )

    def split(self, number, images, *, annotator=None) -> dict:
        """Takes ``images`` (image rows of identity ``number``) out into an identity of their own.

        Stored as one catalogue operation (undo reverts it as a whole) of
        2k - 1 answers for k images taken out, whatever the identity's size:
        "same" answers joining the images taken out, and a "different"
        answer between each of them and the photo that anchors what stays
        (the identity's reference, or the most central photo that stays when
        the reference is taken out); the photos that stay are recorded with
        it (one row each, no answers) and stay on the anchor's side unless
        later answers join them to the photos taken out.
        """
        ident = self._edited(number, "Catalogue.split")
        members = set(ident.images.tolist())
        try:
            out = sorted({int(i) for i in np.asarray(images).reshape(-1).tolist()})
        except (TypeError, ValueError):
            raise TypeError("Catalogue.split: 'images' must be image row numbers.") from None
        if not out:
            raise ValueError(
                f"Catalogue.split: 'images' must be some of {ident.code}'s images; none given."
            )
        stray = [i for i in out if i not in members]
        if stray:
            n = len(self.numbers)
            where = [f"#{i} in {code_of(self.numbers[i])}" for i in stray[:5] if 0 <= i < n]
            if len(where) < min(len(stray), 5):  # not photos of this catalogue at all
                raise ValueError(
                    f"Catalogue.split: 'images' must be some of {ident.code}'s images; "
                    f"{stray[:5]} are not."
                )
            raise StaleIdentity(
                f"Catalogue.split: {', '.join(where)} {'is' if len(stray) == 1 else 'are'} no "
                f"longer in {ident.code}; nothing was changed. Reload to see the catalogue as "
                "it is now."
            )
        stay = np.array(sorted(members - set(out)), np.int64)
        if not len(stay):
            raise ValueError(f"Catalogue.split: that would take every image out of {ident.code}.")
        anchor = int(ident.reference)
        if anchor in out:
            anchor = int(stay[_medoid(self._clusters.X, stay)])
        pairs = [[k, anchor] for k in out] + [[out[0], k] for k in out[1:]]
        answers = ["different"] * len(out) + ["same"] * (len(out) - 1)
        # a photo that stays must not be joined by answers to one taken out
        comps = must_link_components(self._store.n_images, read_answers(self._store))
        tied = [[k, int(s)] for k in out for s in stay[comps[stay] == comps[k]][:1]]
        self._refuse_contradiction(
            "Catalogue.split",
            pairs + tied,
            [a == "same" for a in answers] + [False] * len(tied),
        )
        return self._store.apply_operation(
            "split",
            pairs,
            answers,
            detail=f"{out} out of {ident.code}",
            annotator=annotator,
            stay=stay,
        )

    def image_file(self, index, images_dir) -> Path:
        """The file of image ``index``: ``images_dir / path``, or under the folder it was
        added from (a new season)."""
        return image_file_of(self._roots, index, self.image_paths[index], images_dir)

    def locations(self, images_dir=None) -> list:
        """[(photo folder, path inside it)] for every image, in image order.

        The folder is the one the photo was added from: ``images_dir`` (default: the run's
        folder as the store records it; '' where it records none) for the run's own photos,
        the folder given with ``--add-to`` for a later season's (where it is now, after a
        move). ``folder / path`` is the photo's file for every season alike, whereas the
        store lists a season's photos under its folder's name (``2025/cam0/x.jpg``).
        """
        if images_dir is None:
            images_dir = self._store.meta.get("images_root", "")
        base = str(Path(images_dir).resolve()) if images_dir else ""
        return [
            self._roots[k] if k in self._roots else (base, listed)
            for k, listed in enumerate(self.image_paths)
        ]

    def status(self, **kwargs) -> dict:
        """:func:`aas_core.catalogue.estimate_status` for this catalogue."""
        from .estimate import estimate_status

        return estimate_status(self, **kwargs)

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
        """[image_path, code, name, verified] for every image, in image order; the name is
        '' where it is in conflict (see the module doc)."""
        out = []
        for path, k, v in zip(self.image_paths, self.numbers.tolist(), self.verified.tolist()):
            ident = self._by_number[k]
            out.append([path, ident.code, ident.name if ident.named else "", bool(v)])
        return out


class LiveCatalogue:
    """The catalogue of a store as it is now, shared by the threads of a server.

    Calling it returns :func:`build_catalogue`'s catalogue, rebuilt only when
    answers, undos, names, checks or the photos changed
    (:meth:`AnnotationStore.version`), one build at a time (a build records new
    identity numbers). :meth:`status` is :func:`estimate_status` of that
    catalogue, computed once per catalogue.
    """

    def __init__(self, store, clusters, **build):
        import threading

        self.store, self.clusters, self.build = store, clusters, build
        self._lock = threading.Lock()
        self._key = self._cat = self._status = None
        self._calibration = None  # (images, embedding id, features) once looked up

    def __call__(self) -> Catalogue:
        with self._lock:
            key = self.store.version()
            if key != self._key:
                calibration = self._calibration_embedding()
                self._cat = build_catalogue(
                    self.store, self.clusters, calibration=calibration, **self.build
                )
                self._key, self._status = key, None
            return self._cat

    def latest(self):
        """The catalogue built last (None before the first build); never builds."""
        with self._lock:
            return self._cat

    def _calibration_embedding(self):
        """The earliest recorded embedding of all the store's photos (read once)."""
        n = self.store.n_images
        if self._calibration is None or self._calibration[0] != n:
            self._calibration = (n, *calibration_embedding(self.store))
        return self._calibration[1:]

    def use(self, clusters) -> None:
        """Builds from now on from ``clusters`` (a new embedding of the same photos)."""
        with self._lock:
            self.clusters = clusters
            self._key = self._cat = self._status = None

    def status(self) -> dict:
        cat = self()
        with self._lock:
            if self._status is not None and self._status[0] is cat:
                return self._status[1]
        got = cat.status()  # outside the lock: builds may go on meanwhile
        with self._lock:
            self._status = (cat, got)
        return got


def calibration_embedding(store):
    """(id, unit features) of the earliest recorded embedding of all the store's photos
    whose file can be read, or (0, None).

    The status estimates missing merges from similarities in this embedding
    (:func:`.estimate.missing_merges`): it stays the same while ``--learn`` or
    ``--reembed`` change the one the identities come from, so check answers
    drawn in it keep counting.
    """
    n = store.n_images
    for row in store.embeddings_history():
        try:
            X = np.load(row["path"], mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            continue
        if X.ndim == 2 and len(X) == n:
            X = np.asarray(X, np.float32)
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
            return int(row["id"]), X
    return 0, None


def build_catalogue(
    store, clusters, *, clustering="dbscan", merge="auto", record=True, calibration=None
) -> Catalogue:
    """The store's identities now: its answers folded into ``clusters``, with evidence.

    One read of the store (answers, anchors, names, checks), the identities
    computed in memory (:func:`.evidence.refine_identities`), one write of
    new numbers and moved anchors.

    Parameters
    ----------
    store : AnnotationStore (schema version 3)
    clusters : ClusterState of the store's embeddings (:func:`aas_core.cluster_features`)
    clustering : "dbscan" (default) or "finch", the base partition refined
    merge : what a "same" answer to a pair question merges (see :func:`aas_core.np3`);
        "auto" (default) decides from the pair questions' answers inside clusters.
        A person's merge always joins the two whole identities.
    record : bool
        Write new identity numbers and moved anchors to the store (one
        transaction), so the numbers stay the same next time. Without it the
        numbers new identities would get are shown but not kept.
    calibration : (id, features) or None
        The embedding the status's calibration checks are drawn in
        (:func:`calibration_embedding`; looked up when the status first needs
        it when None); its features default to ``clusters.X``.
    """
    n = store.n_images
    if len(clusters.X) != n:
        raise ValueError(
            f"build_catalogue: 'clusters' holds {len(clusters.X)} images but the store "
            f"{str(store.path)!r} lists {n}."
        )
    answers = read_answers(store)
    part = refine_identities(clusters, answers, clustering=clustering, merge=merge)
    labels = np.unique(part.labels, return_inverse=True)[1].astype(np.int64)
    components = must_link_components(n, answers, part.kept)
    refs = reference_photos(labels, clusters.X, components)
    verified = verified_mask(labels, refs, components)
    rec = load_records(store)
    members = _members(labels)
    claims, absorbed = _claim(labels, rec.anchors)
    unclaimed = sorted(set(members) - set(claims), key=lambda c: members[c][0])
    new = [anchor_sample(members[lab]) for lab in unclaimed]
    changed = {}
    for lab, num in claims.items():
        sample = anchor_sample(members[lab])
        if set(sample.tolist()) != rec.anchors[num]:
            changed[num] = sample
    if record:
        new_numbers = record_anchors(store, new, changed)
    else:
        new_numbers = list(range(rec.next_number, rec.next_number + len(new)))
    owner = {**claims, **dict(zip(unclaimed, new_numbers))}
    numbers = np.empty(n, np.int64)
    for lab, num in owner.items():
        numbers[members[lab]] = num
    names, checked, conflicts = _follow_photos(rec, labels, owner, components)
    identities = []
    for lab, num in sorted(owner.items(), key=lambda kv: kv[1]):
        images = members[lab]
        identities.append(
            Identity(
                number=num,
                code=code_of(num),
                name=names.get(lab) or code_of(num),
                images=images,
                checked=checked.get(lab, False),
                absorbed=tuple(sorted(absorbed.get(num, ()))),
                reference=int(refs[lab]),
                verified=verified[images],
                conflict=conflicts.get(lab, ""),
            )
        )
    return Catalogue(
        store,
        identities,
        numbers,
        store.image_paths(),
        clustering=clustering,
        merge=part.merge,
        clusters=clusters,
        answers=answers,
        verified=verified,
        dissolved=part.dissolved,
        embedding=int(store._read("SELECT COALESCE(MAX(id), 0) FROM embeddings")[0][0]),
        calibration=calibration,
    )


def describe_change(before, after, pairs, kind) -> dict:
    """What an answer, an edit or an undo did to the catalogue, in words for the page.

    ``before``/``after``: the catalogues around it; ``pairs``: (i, j) image pairs it
    answered (the first is described); ``kind``: the answer ("same", "different",
    "cant_tell", "skip") or "undo". Returns {"changed": bool, "moved": photos
    whose identity changed, "verified": change in verified photos, "message"}.
    """
    n = min(len(before.numbers), len(after.numbers))
    moved = int((before.numbers[:n] != after.numbers[:n]).sum())
    gained = int(after.verified.sum()) - int(before.verified.sum())
    i, j = (int(v) for v in pairs[0])
    was_i, was_j = before.identity(before.numbers[i]), before.identity(before.numbers[j])
    now_i, now_j = after.identity(after.numbers[i]), after.identity(after.numbers[j])
    together_before, together_now = was_i is was_j, now_i.number == now_j.number
    plural = "s" if moved != 1 else ""
    if kind in ("cant_tell", "skip"):
        message = "no change: not a constraint"
    elif kind == "undo":
        message = f"undone: {moved} photo{plural} changed identity" if moved else "undone"
    elif kind == "same" and not together_before and together_now:
        message = (
            f"joined {was_i.code} and {was_j.code}: {now_i.code} has {len(now_i.images)} photos now"
        )
    elif kind == "same" and together_before:
        message = (
            f"confirmed: both are {now_i.code}, {now_i.n_verified} of its "
            f"{len(now_i.images)} photos joined by answers"
        )
    elif kind == "different" and together_before and not together_now:
        message = (
            f"split {was_i.code}: #{i} is in {now_i.code} ({len(now_i.images)} photos), #{j} "
            f"in {now_j.code} ({len(now_j.images)}); {moved} photo{plural} changed identity"
        )
    elif kind == "different" and not together_before:
        message = "no change: they were already two identities"
    else:
        message = f"{moved} photo{plural} changed identity"
    if moved and kind in ("same", "different") and "changed identity" not in message:
        message += f"; {moved} photo{plural} changed identity"
    return {
        "changed": bool(moved or gained),
        "moved": moved,
        "verified": gained,
        "message": message,
    }


def _follow_photos(rec, labels, owner, components):
    """Names, checks and conflicts by identity label, from the photos they were given to.

    A name goes to the identity (label) holding most of its photos, if those
    photos and the photos answers join to them are at least half of it; two
    names for one identity: the one with more photos there wins (then its own
    number). A check holds while every photo of its identity is a checked photo
    or joined to one by answers.
    """
    n = len(labels)
    sizes = np.bincount(labels)

    def holder(photos):
        idx = np.fromiter((i for i in photos if i < n), np.int64)
        if not len(idx):
            return None, idx
        labs, counts = np.unique(labels[idx], return_counts=True)
        return int(labs[np.argmax(counts)]), idx

    def joined(idx):  # the photos answers join to idx (idx included)
        return np.isin(components, np.unique(components[idx]))

    names, candidates, conflicts = {}, {}, {}
    for num, name in rec.names.items():
        if not name:
            continue
        lab, idx = holder(rec.name_photos.get(num, ()))
        if lab is None:
            continue
        known = int((joined(idx) & (labels == lab)).sum())
        held = int((labels[idx] == lab).sum())
        if 2 * known >= sizes[lab]:
            candidates.setdefault(lab, []).append((held, owner.get(lab) == num, name))
        else:
            conflicts.setdefault(lab, []).append(
                f"the name {name!r} was given to {len(idx)} photo{'s' * (len(idx) != 1)}; "
                f"{held} of them are among these {sizes[lab]}"
            )
    for lab, cands in candidates.items():
        cands.sort(key=lambda c: (-c[0], not c[1], c[2]))
        names[lab] = cands[0][2]
        for _, _, other in cands[1:]:
            conflicts.setdefault(lab, []).append(
                f"also named {other!r} (merged with it; rename to choose)"
            )
    checked = {}
    for num, mark in rec.checked.items():
        if not mark:
            continue
        lab, idx = holder(rec.check_photos.get(num, ()))
        if lab is None:
            continue
        new = int(((labels == lab) & ~joined(idx)).sum())
        if new == 0:
            checked[lab] = True
        else:
            conflicts.setdefault(lab, []).append(
                f"checked before {new} photo{'s' * (new != 1)} joined it"
            )
    return names, checked, {lab: "; ".join(v) for lab, v in conflicts.items()}


def _medoid(X, rows) -> int:
    """Position in ``rows`` of the photo with the largest summed cosine to the others."""
    sub = X[rows]
    return int(np.argmax(sub @ sub.sum(axis=0)))


def _members(labels) -> dict:
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return {int(labels[g[0]]): np.sort(g) for g in np.split(order, cuts)}


def _claim(labels, anchors):
    """Greedy one-to-one: (cluster -> number, number -> [numbers merged into it])."""
    nums = np.fromiter((k for k, v in anchors.items() for _ in v), np.int64)
    imgs = np.fromiter((i for v in anchors.values() for i in v), np.int64, len(nums))
    keep = imgs < len(labels)
    nums, labs = nums[keep], labels[imgs[keep]]
    if not len(nums):
        return {}, {}
    # (number, cluster, how many of its anchors are there), most first, then the older number
    span = int(labs.max()) + 1
    pair, count = np.unique(nums * span + labs, return_counts=True)
    num, lab = pair // span, pair % span
    order = np.lexsort((lab, num, -count))
    claims, taken = {}, set()
    for t in order.tolist():
        k, c = int(num[t]), int(lab[t])
        if c not in claims and k not in taken:
            claims[c] = k
            taken.add(k)
    absorbed = {}
    # a number whose every cluster was claimed went into the cluster with most of its anchors
    # (ties: the smaller cluster label)
    best = np.lexsort((lab, -count, num))
    first = np.r_[True, np.diff(num[best]) != 0]
    for t in best[first].tolist():
        k = int(num[t])
        if k not in taken:
            absorbed.setdefault(claims[int(lab[t])], []).append(k)
    return claims, absorbed
