"""Image loading and the SpCL transforms (aas_core.train.transforms)."""

import warnings

import numpy as np
import pytest

from _torch import importorskip

torch = importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from aas_core.train import transforms as T  # noqa: E402 - after the torch check

MEAN = np.array(T.IMAGENET_MEAN, np.float32)[:, None, None]
STD = np.array(T.IMAGENET_STD, np.float32)[:, None, None]


def _image(h=20, w=10, seed=0):
    """A random RGB image (values 10..245, so no pixel normalises to the erasing value)."""
    pixels = np.random.default_rng(seed).integers(10, 246, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _normalised(img):
    return (np.asarray(img, np.float32).transpose(2, 0, 1) / 255 - MEAN) / STD


# ---- load_image ---------------------------------------------------------------------------


def test_load_image_gives_decoded_rgb(tmp_path):
    Image.new("L", (5, 4), 77).save(tmp_path / "grey.png")
    pal = Image.new("P", (3, 2))
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow warning for palette transparency
        for name, size in (("grey.png", (5, 4)), ("pal.png", (3, 2))):
            im = T.load_image(tmp_path / name)
            assert im.mode == "RGB" and im.size == size
    assert np.all(np.asarray(T.load_image(str(tmp_path / "grey.png"))) == 77)


def test_load_image_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="image file not found: .*nope.png"):
        T.load_image(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"this is not a PNG")
    with pytest.raises(ValueError, match=r"cannot read the image .*junk.png \(Unidentified"):
        T.load_image(tmp_path / "junk.png")
    _image(64, 64).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read the image .*cut.png \(.*runcated"):
        T.load_image(tmp_path / "cut.png")


# ---- test transform ---------------------------------------------------------------------------


def test_test_transform_resizes_bilinearly_and_normalises():
    img = _image(40, 17)
    out = T.test_transform((24, 12))(img)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert tuple(out.shape) == (3, 24, 12) and out.is_contiguous()
    expected = _normalised(img.resize((12, 24), Image.BILINEAR))
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-6)


def test_test_transform_of_a_solid_image_is_the_normalised_colour():
    out = T.test_transform((8, 4), mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))(
        Image.new("RGB", (3, 3), (255, 0, 51))
    )
    expected = np.array([1.0, -2.0, -0.3], np.float32)[:, None, None]
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(expected, (3, 8, 4)), atol=1e-6)


def test_transforms_convert_other_modes_to_rgb():
    grey = Image.new("L", (4, 8), 128)
    out = T.test_transform((8, 4))(grey)
    rgb = T.test_transform((8, 4))(grey.convert("RGB"))
    assert torch.equal(out, rgb)
    with pytest.raises(TypeError, match="takes a PIL image"):
        T.test_transform((8, 4))(np.zeros((8, 4, 3)))


# ---- train transform ----------------------------------------------------------------------


def test_train_transform_is_deterministic_for_a_seeded_rng():
    t = T.train_transform((32, 16))
    img = _image(50, 30)
    a = t(img, np.random.default_rng(7))
    b = t(img, np.random.default_rng(7))
    assert tuple(a.shape) == (3, 32, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)
    outs = [t(img, np.random.default_rng(s)) for s in range(8)]
    assert len({o.numpy().tobytes() for o in outs}) == 8
    assert tuple(t(img).shape) == (3, 32, 16)  # rng=None: a fresh generator


def test_flip_mirrors_and_nothing_else_changes():
    img = _image(24, 12)
    plain = T.test_transform((24, 12))(img)
    flipped = T.train_transform((24, 12), flip_p=1.0, pad=0, erase_p=0.0)(
        img, np.random.default_rng(0)
    )
    assert torch.equal(flipped, torch.flip(plain, dims=[2]))
    same = T.train_transform((24, 12), flip_p=0.0, pad=0, erase_p=0.0)(
        img, np.random.default_rng(0)
    )
    assert torch.equal(same, plain)
    ts = T.train_transform((24, 12), flip_p=0.5, pad=0, erase_p=0.0)
    n_flipped = sum(torch.equal(ts(img, np.random.default_rng(s)), flipped) for s in range(200))
    assert 70 < n_flipped < 130


def test_pad_and_crop_shift_the_image_within_the_padding():
    h, w, p = 16, 8, 3
    img = _image(h, w)
    plain = _normalised(img)
    canvas = np.broadcast_to(-MEAN / STD, (3, h + 2 * p, w + 2 * p)).copy()  # black, normalised
    canvas[:, p : p + h, p : p + w] = plain
    t = T.train_transform((h, w), flip_p=0.0, pad=p, erase_p=0.0)
    offsets = set()
    for s in range(60):
        out = t(img, np.random.default_rng(s)).numpy()
        found = [
            (top, left)
            for top in range(2 * p + 1)
            for left in range(2 * p + 1)
            if np.allclose(out, canvas[:, top : top + h, left : left + w], atol=1e-6)
        ]
        assert found, f"seed {s}: not a window of the padded image"
        offsets.add(found[0])
    assert len(offsets) > 20  # of the 49 possible windows


def test_random_erasing_fills_one_rectangle_with_the_mean():
    h, w = 32, 16
    img = _image(h, w)
    plain = T.test_transform((h, w))(img).numpy()
    t = T.train_transform((h, w), flip_p=0.0, pad=0, erase_p=1.0)
    for s in range(40):
        out = t(img, np.random.default_rng(s)).numpy()
        changed = np.any(out != plain, axis=0)
        rows, cols = np.nonzero(changed)
        assert rows.size, f"seed {s}: nothing erased"
        eh, ew = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        assert changed[box].all(), "the erased region is a rectangle"
        # filled with the per-channel mean value, in normalised units (SpCL's quirk)
        np.testing.assert_array_equal(out[(slice(None), *box)], np.broadcast_to(MEAN, (3, eh, ew)))
        assert 0.02 * h * w * 0.5 <= eh * ew <= 0.4 * h * w * 1.5
        assert eh < h and ew < w
    never = T.train_transform((h, w), flip_p=0.0, pad=0, erase_p=0.0)
    assert np.array_equal(never(img, np.random.default_rng(0)).numpy(), plain)


def test_erasing_probability_is_respected():
    img = _image(16, 8)
    plain = T.test_transform((16, 8))(img)
    t = T.train_transform((16, 8), flip_p=0.0, pad=0, erase_p=0.5)
    erased = sum(not torch.equal(t(img, np.random.default_rng(s)), plain) for s in range(200))
    assert 70 < erased < 130


@pytest.mark.parametrize(
    "factory, kwargs, exc, match",
    [
        ("test_transform", {"size": (0, 4)}, ValueError, "'size' parameter of test_transform"),
        ("test_transform", {"size": (8,)}, TypeError, "'size' parameter"),
        ("test_transform", {"size": (8.0, 4)}, TypeError, "'size' parameter"),
        ("test_transform", {"size": "256x128"}, TypeError, "'size' parameter"),
        ("test_transform", {"mean": (0.5, 0.5)}, ValueError, "'mean' parameter"),
        ("test_transform", {"std": (0.2, 0.0, 0.2)}, ValueError, "'std' parameter.*> 0"),
        ("test_transform", {"std": (0.2, np.nan, 0.2)}, ValueError, "'std' parameter"),
        ("train_transform", {"flip_p": 1.5}, ValueError, "'flip_p' parameter of train_"),
        ("train_transform", {"erase_p": -0.1}, ValueError, "'erase_p' parameter"),
        ("train_transform", {"erase_p": "0.5"}, TypeError, "'erase_p' parameter"),
        ("train_transform", {"pad": -1}, ValueError, "'pad' parameter"),
        ("train_transform", {"pad": 2.5}, ValueError, "'pad' parameter"),
        ("train_transform", {"size": (-1, 5)}, ValueError, "'size' parameter of train_"),
    ],
)
def test_bad_transform_arguments_are_named(factory, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        getattr(T, factory)(**kwargs)


def test_rng_must_be_a_generator():
    with pytest.raises(TypeError, match="'rng' parameter"):
        T.train_transform((8, 4))(_image(), rng=3)


def test_reprs_show_the_settings():
    assert repr(T.test_transform((8, 4))).startswith("EvalTransform(size=(8, 4), mean=")
    assert "flip_p=0.5, pad=10, erase_p=0.5" in repr(T.train_transform())


# ---- ImageTensors -----------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path):
    out = []
    for k in range(6):
        path = tmp_path / f"{k}.png"
        _image(20, 10, seed=k).save(path)
        out.append(path)
    return out


def test_image_tensors_items_carry_their_index_and_label(files):
    ds = T.ImageTensors(files, T.test_transform((16, 8)))
    assert len(ds) == 6
    x, i = ds[4]
    assert i == 4 and torch.equal(x, T.test_transform((16, 8))(T.load_image(files[4])))
    labels = np.array([3, 3, 5, 5, 9, 9], np.int32)
    dl = T.ImageTensors(files, T.test_transform((16, 8)), labels=labels)
    x, i, label = dl[2]
    assert (i, label) == (2, 5) and isinstance(label, int)
    labels[2] = 100  # the dataset keeps its own copy
    assert dl[2][2] == 5
    with pytest.raises(IndexError, match="index 6 out of range"):
        ds[6]


def test_image_tensors_augmentation_depends_only_on_seed_epoch_and_index(files):
    t = T.train_transform((16, 8))
    ds = T.ImageTensors(files, t, seed=11)
    first = [ds[i][0] for i in range(6)]
    again = [ds[i][0] for i in reversed(range(6))][::-1]  # another order
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    expected = t(T.load_image(files[3]), np.random.default_rng([11, 0, 3]))
    assert torch.equal(first[3], expected)
    ds.set_epoch(1)
    assert ds.epoch == 1
    assert not all(torch.equal(ds[i][0], first[i]) for i in range(6))
    other = T.ImageTensors(files, t, seed=12)
    assert not all(torch.equal(other[i][0], first[i]) for i in range(6))


def test_image_tensors_give_the_same_batches_with_and_without_workers(files):
    ds = T.ImageTensors(files, T.train_transform((16, 8)), seed=3, labels=list(range(6)))
    ds.set_epoch(2)
    runs = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers)
        runs.append([tuple(part.clone() for part in batch) for batch in loader])
    for b0, b2 in zip(*runs):
        for p0, p2 in zip(b0, b2):
            assert torch.equal(p0, p2)
    assert runs[0][0][1].tolist() == [0, 1, 2, 3] and runs[0][0][2].dtype == torch.int64


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"seed": -1}, ValueError, "'seed' parameter of ImageTensors"),
        ({"labels": [1, 2]}, ValueError, "'labels' parameter.*one per file"),
        ({"labels": [0.5] * 6}, ValueError, "'labels' parameter"),
        ({"transform": None}, TypeError, "'transform' parameter"),
    ],
)
def test_image_tensors_bad_arguments(files, kwargs, exc, match):
    kwargs = {"transform": T.test_transform((8, 4)), **kwargs}
    transform = kwargs.pop("transform")
    with pytest.raises(exc, match=match):
        T.ImageTensors(files, transform, **kwargs)


def test_image_tensors_bad_files_and_epoch(files):
    with pytest.raises(TypeError, match="'files' parameter"):
        T.ImageTensors(str(files[0]), T.test_transform((8, 4)))
    ds = T.ImageTensors(files, T.test_transform((8, 4)))
    with pytest.raises(ValueError, match="'epoch' parameter"):
        ds.set_epoch(-2)
    files[1].write_bytes(b"broken")
    with pytest.raises(ValueError, match="1.png"):
        ds[1]
