"""The data of a training run, and who answers the pairs: the labels (a simulated person)
or a person through an annotation store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import datasets as _datasets
from .._labels import outliers_to_singletons
from ._config import TrainConfig
from ._rundir import _write_json_atomic


def load_datasets(config: TrainConfig):
    """(all, train, query, gallery) ImageDatasets; query and gallery may be None."""
    kw = dict(on_error=config.on_error, verify_images=True)
    if config.data_format == "store":
        ds = _store_photos(config.data)
    elif config.data_format == "csv":
        ds = _datasets.image_folder_csv(config.data, config.root, **kw)
    elif config.data_format == "wildlife":
        ds = _datasets.wildlife_metadata(config.data, config.root, **kw)
    else:
        ds = _datasets.market1501(config.data, **kw)
    if ds.split is None:
        train = ds
        query = gallery = None
    else:
        splits = set(ds.split.tolist())
        if config.train_split not in splits:
            raise ValueError(
                f"train: no images of split {config.train_split!r} (train_split) in "
                f"{config.data}; the splits are {sorted(splits)}."
            )
        train = ds.select_split(config.train_split)
        if config.query_split in splits and config.gallery_split in splits:
            query = ds.select_split(config.query_split)
            gallery = ds.select_split(config.gallery_split)
        elif config.eval_split in splits:
            query = gallery = ds.select_split(config.eval_split)
        else:
            query = gallery = None
    if len(train) < 2:
        raise ValueError(f"train: need at least 2 training images; got {len(train)}.")
    return ds, train, query, gallery


def _store_photos(path):
    """The photos of a catalogue's store (``aas catalogue``) as an ImageDataset.

    Paths and order are the store's, identities unknown (-1); ``extra["file"]``
    holds each photo's file (a new season's photos lie under their own folder).
    """
    from ..annotate.photos import missing_photos, photo_files
    from ..annotate.store import AnnotationStore

    with AnnotationStore.open_to_read(path) as store:  # read only: a read-only run is fine
        files = photo_files(store)
        paths = store.image_paths()
        root = store.meta.get("images_root", "")
    missing = missing_photos(files)
    if missing:
        k = missing[0]
        raise ValueError(
            f"train: {len(missing)} of the {len(files)} photos of the store {str(path)!r} are "
            f"missing, the first {paths[k]!r} (expected at {str(files[k])!r}); bring them back "
            "or run the catalogue where they are."
        )
    return _datasets.ImageDataset(
        paths=tuple(paths),
        identity=np.full(len(paths), -1, np.int64),
        identity_names=(),
        root=Path(root),
        extra={"file": np.array([str(f) for f in files])},
    )


def _files_of(dataset) -> list:
    """The image files of a dataset (a store's photos keep their own, see _store_photos)."""
    if "file" in dataset.extra:
        return [Path(f) for f in dataset.extra["file"].tolist()]
    return dataset.files


def _oracle_labels(identity: np.ndarray) -> np.ndarray:
    """Identity codes for the oracle: an unknown (-1) image matches no other."""
    return outliers_to_singletons(identity)


def _make_sampler(name):
    from .. import sampling

    return {
        "aas": sampling.AmbiguityAwareSampler,
        "random": sampling.RandomPairSampler,
        "gbas": sampling.GBAS,
        "lbas": sampling.LBAS,
        "nis": sampling.NISSampler,
    }[name]()


# ---- a person as the oracle: the annotation store ------------------------------------


def sampler_needed(config) -> bool:
    return config.sampler != "none"


def _open_store(path, train_set, *, reading=False):
    """The annotation store of the run: created from the training images if missing; with
    ``reading`` (a catalogue's store whose answers are only read), opened read-only where
    it cannot be written."""
    from ..annotate.store import AnnotationStore

    path = Path(path)
    if not path.exists():
        return AnnotationStore.create(path, list(train_set.paths))
    store = AnnotationStore.open_to_read(path) if reading else AnnotationStore.open(path)
    if list(store.image_paths()) != list(train_set.paths):
        raise ValueError(
            f"train: the store {str(path)!r} lists other images than the training set "
            f"({store.n_images} vs {len(train_set)}); give a new store path or the data it "
            "was made for."
        )
    return store


def _ask_store(store, run_dir: Path, epoch: int, proposal, config, proceed: bool) -> dict:
    """Queues the cycle's pairs once, then reads what the person answered.

    The pending cycle (its epoch and pair ids) is kept in ``pending_cycle.json``
    so that a resumed run asks about the same pairs instead of proposing anew.
    """
    pending_path = run_dir / "pending_cycle.json"
    pending = None
    if pending_path.exists():
        with open(pending_path, encoding="utf-8") as f:
            pending = json.load(f)
    if pending is None or pending["epoch"] != epoch:
        cycle = store.next_cycle()
        store.add_pairs(
            proposal.pairs,
            sampler=f"{config.sampler} (aas train)",
            cycle=cycle,
            prob=proposal.prob,
            pool=proposal.pool,
            kind=proposal.kind,
        )
        ids = {}
        for p in store.pairs():  # a pair queued earlier keeps its old id and cycle
            ids[(p["i"], p["j"])] = ids[(p["j"], p["i"])] = p["pair_id"]
        pending = {
            "epoch": epoch,
            "store_cycle": cycle,
            "pair_ids": [ids[(int(i), int(j))] for i, j in proposal.pairs],
        }
        _write_json_atomic(pending_path, pending)
    current = {a["pair_id"]: a["answer"] for a in store.answers()}
    told = [current.get(pid) for pid in pending["pair_ids"]]
    unanswered = sum(t is None for t in told)
    out = {"waiting": bool(unanswered) and not proceed, "pairs": len(told)}
    out["unanswered"] = unanswered
    if out["waiting"]:
        return out
    pending_path.unlink()
    out["constraints"] = store.constraints()
    out["extra"] = {
        "store_cycle": pending["store_cycle"],
        "same": sum(t == "same" for t in told),
        "different": sum(t == "different" for t in told),
        "cant_tell": sum(t == "cant_tell" for t in told),
        "skipped": sum(t == "skip" for t in told),
        "unanswered": unanswered,
    }
    return out


def _waiting(got, store, run_dir: Path, train_set) -> dict:
    message = (
        f"waiting for a person: {got['unanswered']} of the cycle's {got['pairs']} pairs are "
        f"unanswered in {store.path}. Answer them with\n"
        f"  aas annotate --store {store.path} --images {train_set.root}\n"
        f"then continue with\n"
        f"  aas train --out {run_dir} --resume        (--proceed: go on without the rest)"
    )
    return {
        "message": message,
        "store": str(store.path),
        "images": str(train_set.root),
        "pairs": got["pairs"],
        "unanswered": got["unanswered"],
    }
