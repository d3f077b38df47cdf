"""A store's photos checked against the files: every photo is known by its content.

The store records each photo's size and SHA-256 when it is listed
(:meth:`AnnotationStore.record_files`). :func:`check_photos` compares them
with the files under a folder: a photo is read again only when its size or
modification time differs from when it was last verified, so checking
thousands of unchanged camera-trap photos costs one ``stat`` each. Photos
that are not where the store lists them (moved, renamed, the folder itself
moved) are looked for by their content under the folder; :meth:`PhotoCheck.apply`
records what was found. Nothing here decides what to tell a person: the
result lists what does not match, and the caller words it.

Where each photo lies: :func:`photo_files` (a catalogue's photos, a new season's under
their own folder) and :func:`missing_photos`; which photos can be shown:
:func:`photo_problems`, the one rule of the annotation page and the exports.
"""

from __future__ import annotations

import mimetypes
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from .store import FileDigest, file_digest, image_file_of

__all__ = [
    "Mismatch",
    "PhotoCheck",
    "broken_links",
    "check_photos",
    "missing_photos",
    "photo_files",
    "photo_problems",
]

# How each kind of mismatch is counted in a summary.
_KINDS = ("missing", "broken link", "not a file", "unreadable", "other size", "other content")


@dataclass(frozen=True)
class Mismatch:
    """A photo that is not as the store recorded it.

    index : int, the image; shown : str, the photo as a person finds it (its listed
    path under the run's folder, or the file's path for photos of other folders);
    kind : one of "missing", "broken link", "not a file", "unreadable", "other size",
    "other content"; detail : what differs, as a phrase ("is missing").
    """

    index: int
    shown: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.shown!r} {self.detail}"


@dataclass
class PhotoCheck:
    """What :func:`check_photos` found.

    Attributes
    ----------
    folder, run_folder : Path, the folder checked and the run's recorded folder
    photos : int, how many photos the store lists
    mismatches : list of Mismatch, in image order: photos found nowhere (empty: all found)
    moves : dict {index: new path}, photos found by their content under another path
        (relative to ``folder`` for the run's photos, absolute for other folders')
    mtimes : dict {index: mtime_ns}, verified photos whose modification time changed
    unrecorded : dict {index: FileDigest}, photos whose content the store had not recorded
        (a store made before version 3), read now
    """

    folder: Path
    run_folder: Path
    photos: int
    mismatches: list = field(default_factory=list)
    moves: dict = field(default_factory=dict)
    mtimes: dict = field(default_factory=dict)
    unrecorded: dict = field(default_factory=dict)

    @property
    def folder_moved(self) -> bool:
        """Whether the photos were checked in another folder than the run's."""
        return self.folder != self.run_folder

    def summary(self) -> str:
        """The first mismatch and how many there are, by kind (one phrase)."""
        if not self.mismatches:
            return f"all {self.photos} photos match"
        counts = {}
        for m in self.mismatches:
            counts[m.kind] = counts.get(m.kind, 0) + 1
        kinds = ", ".join(f"{counts[k]} {k}" for k in _KINDS if k in counts)
        return (
            f"{self.mismatches[0]} ({len(self.mismatches)} of {self.photos} photos do not "
            f"match: {kinds})"
        )

    def apply(self, store) -> None:
        """Records what was found: contents not recorded before, new paths (with their
        history), the run's new folder, and verification times."""
        if self.mismatches:
            raise ValueError(f"PhotoCheck.apply: the photos do not match ({self.summary()}).")
        if self.unrecorded:  # as verified now, wherever that was
            store.record_files(
                {
                    k: d._replace(mtime_ns=self.mtimes.get(k, d.mtime_ns))
                    for k, d in self.unrecorded.items()
                }
            )
        mtimes = {k: t for k, t in self.mtimes.items() if k not in self.unrecorded}
        if self.moves or self.folder_moved:
            meta = {"images_root": str(self.folder)} if self.folder_moved else None
            store.relocate(self.moves, mtimes=mtimes, meta=meta)
        elif mtimes:
            store.set_file_times(mtimes)


def broken_links(folder, paths) -> list:
    """[(path, link target)] for the ``paths`` under ``folder`` that are symbolic links whose
    target is missing or not a regular file."""
    out = []
    for p in paths:
        f = Path(folder) / p
        if os.path.islink(f) and not os.path.isfile(f):
            out.append((p, _target(f)))
    return out


def check_photos(store, folder, *, run_folder=None, suffixes=None) -> PhotoCheck:
    """Checks every photo of ``store`` against the files; nothing is written.

    Parameters
    ----------
    store : AnnotationStore
    folder : str or Path
        Where the run's photos are to be found: its listed paths are relative
        to it. Photos added from other folders (a new season) are checked
        where the store records them.
    run_folder : str or Path, optional
        The run's recorded folder (default: ``folder``). When ``folder`` is
        another one, photos whose content was never recorded are read from
        ``run_folder`` when they are still there, and photos of other
        folders are also looked for where they lie relative to ``folder`` as
        they did relative to ``run_folder`` (folders moved together).
    suffixes : set of str, optional
        Only files with these suffixes (lower case, e.g. ``{".jpg"}``) are
        read when looking for photos by content (default: any file).

    Returns
    -------
    PhotoCheck
        Each photo that is not at its listed path with its recorded size and
        SHA-256 is looked for by content under ``folder`` (among the files
        that are no other photo's). ``mismatches`` lists those found nowhere.
        A photo never recorded (a store made before version 3) is recorded
        from the file at its place; if there is none, it is a mismatch.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from aas_core.annotate import AnnotationStore
    >>> photos = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("a.png", "b.png"):
    ...     _ = (photos / name).write_bytes(name.encode())
    >>> store = AnnotationStore.create(photos.parent / f"{photos.name}.sqlite", ["a.png", "b.png"])
    >>> store.record_files({0: photos / "a.png", 1: photos / "b.png"})
    2
    >>> _ = (photos / "b.png").rename(photos / "renamed.png")
    >>> check = check_photos(store, photos)
    >>> check.mismatches, check.moves
    ([], {1: 'renamed.png'})
    >>> check.apply(store)
    >>> store.image_paths()
    ['a.png', 'renamed.png']
    >>> store.close()
    """
    folder = Path(folder).resolve()
    run_folder = folder if run_folder is None else Path(run_folder).resolve()
    listed = store.image_paths()
    roots = store.image_roots()
    known = store.files()
    check = PhotoCheck(folder=folder, run_folder=run_folder, photos=len(listed))
    taken = set()  # files that are some photo's, never another's
    pending = []  # (index, recorded content, mismatch): to be looked for by content
    for k, path in enumerate(listed):
        other_folder = k in roots
        if other_folder:
            root, rel = roots[k]
            file = Path(root) / rel
            shown = str(file)
        else:
            file = folder / path
            shown = path
        want = known.get(k)
        if want is None:  # never recorded: its content is what is there now
            sources = [file]
            if not other_folder and check.folder_moved:
                sources.insert(0, run_folder / path)  # where it was, if it still is
            for source in sources:
                try:
                    want = file_digest(source)
                    break
                except OSError:
                    pass
            if want is None:
                st, (kind, detail) = _stat(file)
                if st is not None:
                    kind, detail = "unreadable", "cannot be read"
                check.mismatches.append(Mismatch(k, shown, kind, detail))
                continue
            check.unrecorded[k] = want
        kind, detail = _compare(file, want)
        if kind is None:
            taken.add(str(file))
            if detail != want.mtime_ns:
                check.mtimes[k] = detail
            continue
        if other_folder and check.folder_moved:
            along = Path(os.path.normpath(folder / os.path.relpath(file, run_folder)))
            found, t = _compare(along, want)
            if found is None:
                check.moves[k] = str(along)
                check.mtimes[k] = t
                taken.add(str(along))
                continue
        pending.append((k, want, Mismatch(k, shown, kind, detail)))
    if pending:
        _find_by_content(check, pending, taken, listed, roots, suffixes)
    check.mismatches.sort(key=lambda m: m.index)
    return check


def _find_by_content(check, pending, taken, listed, roots, suffixes) -> None:
    sizes = {want.size for _, want, _ in pending}
    by_content = {}
    for dirpath, dirs, files in os.walk(check.folder):
        dirs.sort()
        for name in sorted(files):
            if suffixes is not None and Path(name).suffix.lower() not in suffixes:
                continue
            f = Path(dirpath, name)
            if str(f) in taken:
                continue
            try:
                st = os.stat(f)
                if not stat.S_ISREG(st.st_mode) or st.st_size not in sizes:
                    continue
                d = file_digest(f)
            except OSError:
                continue
            by_content.setdefault((d.size, d.sha256), []).append((f, d))
    for k, want, mismatch in pending:
        options = [
            o for o in by_content.get((want.size, want.sha256), []) if str(o[0]) not in taken
        ]
        if not options:
            check.mismatches.append(mismatch)
            continue
        name = PurePosixPath(listed[k]).name  # among copies, the one with its name
        f, d = next((o for o in options if o[0].name == name), options[0])
        taken.add(str(f))
        check.moves[k] = str(f) if k in roots else f.relative_to(check.folder).as_posix()
        check.mtimes[k] = d.mtime_ns


def _target(link) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return "?"


def _stat(file) -> tuple:
    """(os.stat_result, (None, None)) for a regular file (symlinks followed), else
    (None, (kind, what is wrong))."""
    try:
        st = os.stat(file)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(file):
            return None, (
                "broken link",
                f"is a symbolic link to {_target(file)!r}, which is missing",
            )
        return None, ("missing", "is missing")
    except OSError as exc:  # a symlink loop, no permission on a folder
        return None, ("unreadable", f"cannot be read ({exc.strerror or exc})")
    if not stat.S_ISREG(st.st_mode):
        if os.path.islink(file):
            return None, (
                "broken link",
                f"is a symbolic link to {_target(file)!r}, which is not a file",
            )
        return None, ("not a file", "is not a file")
    return st, (None, None)


def _compare(file, want: FileDigest) -> tuple:
    """(None, mtime_ns) when ``file`` holds ``want``'s content, else (kind, what differs)."""
    st, problem = _stat(file)
    if st is None:
        return problem
    if st.st_size != want.size:
        return "other size", f"has another size ({st.st_size} bytes; {want.size} when listed)"
    if st.st_mtime_ns == want.mtime_ns:
        return None, st.st_mtime_ns
    try:
        d = file_digest(file)
    except OSError as exc:
        return "unreadable", f"cannot be read ({exc.strerror or exc})"
    if (d.size, d.sha256) != (want.size, want.sha256):
        return "other content", "has other content than when it was listed (same size)"
    return None, d.mtime_ns


# ---- where each photo lies, and whether it can be shown -----------------------------


def photo_files(store) -> list:
    """The file of every photo of a catalogue's store, in store order.

    A photo lies under the store's photo folder (``meta['images_root']``,
    recorded by ``aas catalogue``), or under the folder it was added from
    (a new season, :meth:`~aas_core.annotate.AnnotationStore.image_roots`).

    Raises
    ------
    ValueError
        If the store records no photo folder: it was not made by ``aas catalogue``.
    """
    root = store.meta.get("images_root", "")
    if not root:
        raise ValueError(
            f"{str(store.path)!r} is not the store of a catalogue: it records no photo folder "
            "(made by 'aas annotate', or by an 'aas catalogue' from before it recorded one)"
        )
    roots = store.image_roots()
    return [image_file_of(roots, i, p, root) for i, p in enumerate(store.image_paths())]


def missing_photos(files) -> list:
    """The positions of the files in ``files`` that are not there (or not files)."""
    return [k for k, f in enumerate(files) if not os.path.isfile(f)]


class _PhotoFiles:
    """Where each photo of a store lies, and why it cannot be shown when it cannot.

    A photo is served from its folder joined with its listed path, taken
    lexically: the path must stay inside the folder (no absolute path, no
    ``..``), and it may be a symbolic link to a readable file anywhere (the
    person who made the folder put it there: a folder of links to a photo
    archive), provided that a file it leads to outside the folder starts
    like an image (JPEG, PNG, GIF, WebP, BMP or TIFF), so a link named
    ``x.jpg`` to any other file is never served or exported. Nothing else
    can be reached: URLs name photos by index only.
    """

    def __init__(self, store, images_dir):
        self.root = Path(images_dir).resolve()
        self.paths = store.image_paths()
        # images added from other folders (a new season) lie under their own recorded root
        self.roots = {k: (Path(r).resolve(), rel) for k, (r, rel) in store.image_roots().items()}

    def locate(self, index):
        """(path as listed, the file or None when it would lie outside, its folder)."""
        shown = self.paths[index]
        base, rel = self.roots.get(index, (self.root, shown))
        path = PurePosixPath(rel)
        if not path.parts or path.is_absolute() or PureWindowsPath(rel).anchor:
            return shown, None, base
        if ".." in path.parts:
            return shown, None, base
        return shown, base.joinpath(*path.parts), base

    def problem(self, index):
        """None when photo ``index`` can be shown, else why not (a short phrase)."""
        _, full, base = self.locate(index)
        if full is None:
            return "outside the photo folder"
        try:
            st = os.stat(full)  # follows symlinks: the file the page would get
        except (FileNotFoundError, NotADirectoryError):
            if os.path.islink(full):
                return "a symbolic link whose target is missing"
            return f"missing from {base}"
        except OSError as exc:  # a symlink loop, a folder without permission
            return f"unreadable: {exc.strerror or exc}"
        if not stat.S_ISREG(st.st_mode):
            return "not a file"
        if not os.access(full, os.R_OK):
            return "unreadable: permission denied"
        if not (mimetypes.guess_type(full.name)[0] or "").startswith("image/"):
            return "not an image file type"
        real = Path(os.path.realpath(full))  # through links, the file itself
        if not real.is_relative_to(base) and not _starts_like_an_image(real):
            return "a link out of the photo folder to a file that is not an image"
        return None


_IMAGE_MAGIC = (
    b"\xff\xd8\xff",
    b"\x89PNG",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)


def _starts_like_an_image(path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def photo_problems(store, images_dir) -> list:
    """[(index, listed path, why it cannot be shown)] for the store's photos the page cannot
    show (see the IMAGE ``problem`` field of the API)."""
    files = _PhotoFiles(store, images_dir)
    out = []
    for k in range(len(files.paths)):
        why = files.problem(k)
        if why is not None:
            out.append((k, files.paths[k], why))
    return out
