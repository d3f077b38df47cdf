"""Helpers for the annotation tests: small PNG files, stores, and the real server process."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import aas_core
from aas_core.annotate import AnnotationStore

# the server process imports the same aas_core as the tests (installed, or the dev tree)
PACKAGE_PARENT = Path(aas_core.__file__).resolve().parents[1]


def write_png(path, seed, size=(96, 72)):
    """A small RGB PNG with a pattern that depends on ``seed`` (stdlib only)."""
    w, h = size
    rows = []
    for y in range(h):
        row = bytearray([0])
        for x in range(w):
            stripe = ((x + seed * 7) // 8 + (y // 8) * (seed % 3 + 1)) % 2
            row += bytes(
                ((40 * seed + 90 * stripe) % 256, (120 + 60 * stripe) % 256, 200 - 30 * (seed % 5))
            )
        rows.append(bytes(row))

    def chunk(kind, data):
        body = kind + data
        return (
            struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        )

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(png)


def write_photos(folder, n, size=(96, 72), cameras=2):
    """``n`` PNGs ``cam{k % cameras}/{k}.png`` under ``folder`` (photo k drawn with seed k);
    their relative paths, in order."""
    paths = [f"cam{k % cameras}/{k}.png" for k in range(n)]
    for k, p in enumerate(paths):
        write_png(Path(folder) / p, k, size=size)
    return paths


def photos_with_embeddings(tmp_path, X, paths):
    """``tmp_path/photos`` holding a stand-in file per relative path (the catalogue reads
    embeddings, not pixels) and ``tmp_path/X.npy`` with its ``X.rows.csv``: (the folder,
    the embeddings' path)."""
    import csv

    import numpy as np

    root = tmp_path / "photos"
    for k, p in enumerate(paths):
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(b"\x89PNG photo %d" % k)
    np.save(tmp_path / "X.npy", X)
    with open(tmp_path / "X.rows.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["index", "path", "identity"], *[[k, p, ""] for k, p in enumerate(paths)]]
        )
    return root, tmp_path / "X.npy"


def make_run(tmp_path, n_images=8, pairs=((0, 1), (2, 3), (4, 5), (6, 7), (1, 2)), missing=()):
    """An image folder with ``n_images`` PNGs (minus ``missing``) and a store queuing ``pairs``."""
    images = tmp_path / "images"
    paths = [f"ind{k // 2}/img{k}.png" for k in range(n_images)]
    for k, p in enumerate(paths):
        if k not in missing:
            write_png(images / p, k)
    store_path = tmp_path / "run.sqlite"
    with AnnotationStore.create(store_path, paths) as store:
        store.add_pairs(list(pairs), sampler="test", cycle=0)
    return store_path, images


class Server:
    """``aas annotate`` as a real process (python -m aas_core.cli), on a free port."""

    def __init__(self, store_path, images, *extra, argv=None):
        """``argv``: another command than ``aas annotate`` (e.g. ``aas catalogue``)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(PACKAGE_PARENT), *filter(None, [env.get("PYTHONPATH")])]
        )
        # output to a file, not a pipe: a full pipe would stall the server
        self.log = Path(store_path).with_name(f"server-{time.monotonic_ns()}.log")
        with open(self.log, "w") as out:
            if argv is None:
                argv = ["annotate", "--store", str(store_path), "--images", str(images)]
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aas_core.cli", *argv]
                + ["--port", "0", "--annotator", "tester", *extra],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self.url = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = re.search(r"on (http://\S+/) ", self.output())
            if m:
                self.url = m.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start (exit {self.proc.returncode}): {self.output()}")

    def output(self):
        return self.log.read_text()

    def request(self, method, path, body=None, *, content_type="application/json", raw=None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method)
        if data is not None or method == "POST":
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                payload = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            payload, status = exc.read(), exc.code
            exc.close()
        return status, (json.loads(payload) if payload and payload[:1] in b"{[" else payload)

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
