import numpy as np
import pytest


def assert_same_partition(a, b):
    """Two label vectors describe the same partition (labels may differ by renaming)."""
    a = np.asarray(a)
    b = np.asarray(b)
    assert a.shape == b.shape
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    assert len(pairs) == len(np.unique(a)) == len(np.unique(b)), "partitions differ"


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def run(tmp_path):
    """The annotation server in process (needs the [web] extra): (Flask test client, store,
    image folder) over 8 photos (one missing) and 5 queued pairs."""
    from _annotate import make_run
    from aas_core.annotate import AnnotationStore
    from aas_core.annotate.server import create_app

    store_path, images = make_run(tmp_path, missing=(6,))
    store = AnnotationStore.open(store_path)
    app = create_app(store, images, annotator="tester")
    with app.test_client() as client:
        yield client, store, images
    store.close()


@pytest.fixture
def catalogue_run(tmp_path):
    """A catalogue server in process (needs the [web] extra): (Flask test client, store,
    identities) over 60 photos of blobs, pairs (0, 1) and (2, 3) queued."""
    import aas_core as aas
    from _annotate import write_photos
    from aas_core.annotate import AnnotationStore
    from aas_core.annotate.server import create_app
    from aas_core.catalogue import build_catalogue
    from aas_core.loop import cluster_features

    X, y = aas.datasets.make_reid_blobs(60, d=16, seed=4)
    images = tmp_path / "images"
    paths = write_photos(images, len(X))
    store = AnnotationStore.create(tmp_path / "run.sqlite", paths)
    store.add_pairs([[0, 1], [2, 3]], sampler="aas", cycle=0)
    cs = cluster_features(X, k1=8, n_threads=1)
    app = create_app(store, images, catalogue=lambda: build_catalogue(store, cs))
    with app.test_client() as client:
        yield client, store, y
    store.close()
