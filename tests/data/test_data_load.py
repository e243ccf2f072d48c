"""``load``: seeded subsets, classes, CIFAR-2, substitution, synthetic sets and bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from fake_datasets import fake_mnist_files
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkrepro.data import REGISTRY, DataUnavailable, RemoteFile, load, select_subset
from ntkrepro.data.registry import class_subset


def _rows_of(raw_images, subset_x):
    """Position of each subset image in the raw split (every fake image is distinct)."""
    flat = raw_images.reshape(len(raw_images), -1)
    return [int(np.flatnonzero((flat == x.reshape(-1)).all(axis=1))[0]) for x in subset_x]


def test_seeded_subsets_are_deterministic_and_real_examples(fake_mnist, tmp_path):
    a = load("mnist", "train", n=9, seed=5, cache_dir=tmp_path)
    b = load("mnist", "train", n=9, seed=5, cache_dir=tmp_path)
    c = load("mnist", "train", n=9, seed=6, cache_dir=tmp_path)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.provenance.indices_sha256 == b.provenance.indices_sha256 != c.provenance.indices_sha256
    rows = _rows_of(fake_mnist.train_images, a.x[..., 0])
    assert len(set(rows)) == 9
    np.testing.assert_array_equal(a.y, fake_mnist.train_labels[rows])
    bigger = load("mnist", "train", n=20, seed=5, cache_dir=tmp_path)
    np.testing.assert_array_equal(bigger.x[:9], a.x)  # nested subsets
    assert a.provenance.n == 9 and a.provenance.seed == 5


def test_n_larger_than_the_split_fails_before_any_download(serve, http_server, tmp_path):
    _, files = fake_mnist_files()
    spec = serve("mnist", files, image_shape=(6, 5, 1))
    REGISTRY["mnist"] = replace(spec, sizes={"train": 40, "test": 12})
    with pytest.raises(ValueError, match="n=41 exceeds the 40 examples of mnist/train"):
        load("mnist", "train", n=41, cache_dir=tmp_path)
    assert http_server.requests == []
    # after a class filter the limit is known only once the labels are read
    with pytest.raises(ValueError, match="n=5 exceeds the 4 available examples"):
        load("mnist", "train", n=5, classes=[3], cache_dir=tmp_path)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=4, max_size=60).filter(lambda v: len(set(v)) == 4),
       st.integers(1, 60), st.integers(0, 2**31))
def test_balanced_subsets_have_equal_class_counts(labels, n, seed):
    labels = np.asarray(labels)
    per_class = np.bincount(labels, minlength=4)
    feasible = per_class.min() >= n // 4 and (per_class > n // 4).sum() >= n % 4
    if n > len(labels) or not feasible:
        with pytest.raises(ValueError):
            select_subset(labels, n, seed=seed, split="train", balanced=True, num_classes=4)
        return
    pick = select_subset(labels, n, seed=seed, split="train", balanced=True, num_classes=4)
    counts = np.bincount(labels[pick], minlength=4)
    assert len(set(pick.tolist())) == n and counts.sum() == n and counts.max() - counts.min() <= 1


def test_classes_are_relabelled_in_the_order_given(fake_mnist, tmp_path):
    data = load("mnist", "test", classes=[7, 2], cache_dir=tmp_path)
    raw = fake_mnist.test_labels
    assert data.num_classes == 2 and len(data) == np.isin(raw, [7, 2]).sum()
    rows = _rows_of(fake_mnist.test_images, data.x[..., 0])
    np.testing.assert_array_equal(np.where(raw[rows] == 7, 0, 1), data.y)
    assert data.provenance.classes == [7, 2]


def test_cifar2_is_the_first_two_cifar10_classes(fake_cifar, tmp_path):
    train = load("cifar2", "train", cache_dir=tmp_path)
    keep = np.isin(fake_cifar.train_labels, [0, 1])
    assert train.num_classes == 2 and train.x.shape == (keep.sum(), 32, 32, 3)
    np.testing.assert_array_equal(train.x, fake_cifar.train_images[keep])
    np.testing.assert_array_equal(train.y, fake_cifar.train_labels[keep])
    assert train.provenance.name == "cifar2"
    # cifar2 shares cifar10's archive and cache folder
    assert load("cifar10", "test", cache_dir=tmp_path).provenance.source == "cache"


def test_substitution_is_recorded_and_can_be_forbidden(fake_mnist, tmp_path):
    subst = load("mnist", "train", n=30, substitute="digits", cache_dir=tmp_path, allow_download=False)
    assert subst.provenance.name == "digits" and subst.provenance.substituted_for == "mnist"
    assert subst.provenance.source == "bundled" and subst.x.shape == (30, 8, 8, 1)
    with pytest.raises(DataUnavailable, match="stand-in digits not allowed"):
        load("mnist", "train", substitute="digits", allow_substitute=False, cache_dir=tmp_path,
             allow_download=False)
    real = load("mnist", "train", n=30, substitute="digits", cache_dir=tmp_path)
    assert real.provenance.name == "mnist" and real.provenance.substituted_for is None


def test_stand_in_for_a_two_class_set_keeps_two_classes(tmp_path):
    data = load("cifar2", "test", substitute="digits", cache_dir=tmp_path, allow_download=False)
    digits = load("digits", "test")
    assert data.num_classes == 2 and set(data.y.tolist()) == {0, 1}
    np.testing.assert_array_equal(data.x, digits.x[np.isin(digits.y, [0, 1])])
    assert data.provenance.substituted_for == "cifar2" and data.provenance.name == "digits"
    assert data.provenance.source_labels == [0, 1] and data.provenance.class_names == ["0", "1"]


def test_a_stand_in_class_pair_selects_exactly_those_stored_labels(serve, http_server, tmp_path):
    """CIFAR-2 unavailable (its archive 404s on the loopback server): the declared stand-in pair
    fashion_mnist_tshirt_shirt is downloaded and keeps exactly the images stored with label 0 (T-shirt/top)
    and 6 (Shirt), in file order, relabelled 0 and 1; the provenance names the pair."""
    arrays, files = fake_mnist_files(seed=4, n_train=60, n_test=30)
    serve("fashion_mnist_tshirt_shirt", files, image_shape=(6, 5, 1))
    missing = RemoteFile("cifar-10-python.tar.gz", (http_server.url + "missing.tar.gz",), "0" * 64)
    REGISTRY["cifar2"] = replace(REGISTRY["cifar2"], files={"train": (missing,), "test": (missing,)})
    for split, images, labels in (("train", arrays.train_images, arrays.train_labels),
                                  ("test", arrays.test_images, arrays.test_labels)):
        data = load("cifar2", split, substitute="fashion_mnist_tshirt_shirt", cache_dir=tmp_path)
        keep = np.flatnonzero(np.isin(labels, [0, 6]))
        np.testing.assert_array_equal(data.x[..., 0], images[keep])
        np.testing.assert_array_equal(data.y, (labels[keep] == 6).astype(int))
        p = data.provenance
        assert (p.name, p.substituted_for, p.source) == ("fashion_mnist_tshirt_shirt", "cifar2", "download")
        assert p.source_labels == [0, 6] and p.class_names == ["T-shirt/top", "Shirt"] and data.num_classes == 2
    assert "/missing.tar.gz" in http_server.requests
    # a balanced subset of the pair draws from both classes only
    sub = load("cifar2", "train", n=10, balanced=True, substitute="fashion_mnist_tshirt_shirt", cache_dir=tmp_path)
    rows = _rows_of(arrays.train_images, sub.x[..., 0])
    assert sorted(arrays.train_labels[rows].tolist()) == [0] * 5 + [6] * 5


def test_provenance_names_the_stored_labels_kept(fake_cifar, tmp_path):
    cifar2 = load("cifar2", "test", cache_dir=tmp_path).provenance
    assert cifar2.source_labels == [0, 1] and cifar2.class_names == ["airplane", "automobile"]
    picked = load("digits", "test", classes=[7, 2]).provenance
    assert picked.source_labels == [7, 2] and picked.class_names == ["7", "2"]
    assert load("digits", "train").provenance.source_labels == list(range(10))
    assert load("circle", "train", n=4).provenance.source_labels is None


@pytest.mark.parametrize("classes, message", [
    (["Shirt", "shirt"], "unknown class 'shirt' of fashion_mnist"),
    ([0, 10], "class 10 is not a label 0..9 of fashion_mnist"),
    ([0, True], "class True is not a label 0..9"),
    (["Shirt"], r"needs at least 2 distinct classes of fashion_mnist, got \['Shirt'\]"),
    ([6, "Shirt"], "needs at least 2 distinct classes"),
    ([], "needs at least 2 distinct classes"),
])
def test_a_class_subset_refuses_unknown_or_too_few_classes(classes, message):
    with pytest.raises(ValueError, match=message) as info:
        class_subset(REGISTRY["fashion_mnist"], "pair", classes, description="", sizes={"train": 1, "test": 1})
    assert "\n" not in str(info.value) and str(info.value).startswith("dataset pair: ")


def test_a_class_subset_takes_classes_of_a_full_stored_dataset_only():
    for base in ("cifar2", "gaussian"):
        with pytest.raises(ValueError, match=f"{base} is not a stored classification dataset"):
            class_subset(REGISTRY[base], "pair", [0, 1], description="", sizes={"train": 1, "test": 1})


def test_circle_grid_and_random_angles():
    grid = load("circle", "train", n=8, options={"grid": True})
    np.testing.assert_allclose(grid.y, -np.pi + 2 * np.pi * np.arange(8) / 8)
    np.testing.assert_allclose(grid.x, np.stack([np.cos(grid.y), np.sin(grid.y)], axis=1))
    test = load("circle", "test", n=8, options={"grid": True})
    np.testing.assert_allclose(test.y, grid.y + np.pi / 8)
    rand = load("circle", "train", n=200, seed=4)
    np.testing.assert_allclose(np.linalg.norm(rand.x, axis=1), 1.0)
    np.testing.assert_allclose(np.arctan2(rand.x[:, 1], rand.x[:, 0]), rand.y, atol=1e-12)
    assert rand.y.min() >= -np.pi and rand.y.max() < np.pi and rand.num_classes is None
    np.testing.assert_array_equal(rand.x, load("circle", "train", n=200, seed=4).x)
    assert not np.array_equal(rand.x, load("circle", "test", n=200, seed=4).x)


def test_gaussian_moments_and_targets():
    n, d = 4000, 3
    data = load("gaussian", "train", n=n, options={"dim": d}, seed=1)
    assert data.x.shape == (n, d) and (data.y == 0).all()
    # mean 0 and covariance I within 5 standard errors
    assert np.abs(data.x.mean(axis=0)).max() < 5 / np.sqrt(n)
    assert np.abs(np.cov(data.x.T) - np.eye(d)).max() < 5 * np.sqrt(2 / n)
    sign = load("gaussian", "test", n=50, options={"dim": d, "target": "sign"})
    assert sign.num_classes == 2
    np.testing.assert_array_equal(sign.y, (sign.x[:, 0] > 0).astype(int))
    prod = load("gaussian", "train", n=20, options={"dim": [2, 2, 1], "target": "product"})
    assert prod.x.shape == (20, 2, 2, 1)
    np.testing.assert_allclose(prod.y, prod.x[:, 0, 0, 0] * prod.x[:, 0, 1, 0] * prod.x[:, 1, 0, 0]
                               * prod.x[:, 1, 1, 0])
    custom = load("gaussian", "train", n=20, options={"dim": 2, "target": lambda x: x[:, 1] ** 2})
    np.testing.assert_allclose(custom.y, custom.x[:, 1] ** 2)


def test_gaussian_linear_teacher_is_shared_by_train_and_test():
    opts = {"dim": 5, "target": "linear"}
    train = load("gaussian", "train", n=40, options=opts, seed=2)
    test = load("gaussian", "test", n=10, options=opts, seed=2)
    w, *_ = np.linalg.lstsq(train.x, train.y, rcond=None)
    np.testing.assert_allclose(test.x @ w, test.y, atol=1e-10)
    other = load("gaussian", "train", n=40, options=opts, seed=3)
    assert train.provenance.sha256 != other.provenance.sha256


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "imagenet"}, "unknown dataset 'imagenet'"),
    ({"split": "val"}, "split must be one of"),
    ({"n": 0}, "n must be a positive integer"),
    ({"n": 2.5}, "n must be a positive integer"),
    ({"n": True}, "n must be a positive integer"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"preprocess": "zca"}, "preprocess must be None or one of"),
    ({"classes": [1, 1]}, "classes must be distinct"),
    ({"classes": [10]}, r"classes \[10\] out of range for digits"),
    ({"dtype": np.int32}, "dtype must be a float dtype"),
    ({"substitute": "cifar10x"}, "unknown dataset 'cifar10x'"),
    ({"substitute": "digits"}, "'digits' cannot stand in for 'digits'"),
    ({"options": {"dim": 2}}, "options apply to synthetic datasets only"),
    ({"path": "/tmp"}, "path= applies to file datasets"),
    ({"n": 1348}, "n=1348 exceeds the 1347 examples of digits/train"),
    ({"name": "gaussian", "n": None}, "synthetic dataset gaussian needs n"),
    ({"name": "gaussian", "n": 3, "options": {}}, "option dim must be"),
    ({"name": "gaussian", "n": 3, "options": {"dim": 2, "target": "cube"}}, "target must be None"),
    ({"name": "gaussian", "n": 3, "options": {"dim": 2}, "preprocess": "standardize"},
     "applies to image datasets; gaussian is not one"),
    ({"name": "circle", "n": 3, "options": {"grids": True}}, r"unknown option\(s\) \['grids'\]"),
    ({"name": "circle", "n": 3, "balanced": True}, "do not apply to synthetic"),
])
def test_bad_input_is_a_one_line_value_error(kwargs, message):
    args = {"name": "digits", "split": "train"} | kwargs
    with pytest.raises(ValueError, match=message) as info:
        load(args.pop("name"), args.pop("split"), **args)
    assert "\n" not in str(info.value)


def _small_shaped(monkeypatch, train=600, test=200):
    """``cifar10_shaped`` with small splits (the registered one is 50,000 / 10,000)."""
    from ntkrepro.data.synthetic import class_images

    sizes = {"train": train, "test": test}
    spec = replace(REGISTRY["cifar10_shaped"], sizes=sizes, generate=lambda split: class_images(
        split, n=sizes[split], image_shape=(32, 32, 3), num_classes=10))
    monkeypatch.setitem(REGISTRY, "cifar10_shaped", spec)
    return spec


def test_shaped_images_are_fixed_balanced_uint8_and_class_structured():
    from ntkrepro.data.synthetic import class_images

    train, labels = class_images("train", n=1000, image_shape=(32, 32, 3), num_classes=10)
    test, test_labels = class_images("test", n=300, image_shape=(32, 32, 3), num_classes=10)
    assert train.shape == (1000, 32, 32, 3) and train.dtype == np.uint8
    assert np.bincount(labels).tolist() == [100] * 10  # balanced: arange(n) % k, shuffled
    assert not np.array_equal(labels, np.arange(1000) % 10)
    class_images.cache_clear()
    again, again_labels = class_images("train", n=1000, image_shape=(32, 32, 3), num_classes=10)
    np.testing.assert_array_equal(again, train)  # one fixed dataset, like a stored file
    np.testing.assert_array_equal(again_labels, labels)
    # pixels 127.5 + 40 (mu + z): mean and spread within a few standard errors (clipping at 3.2 sigma is rare)
    x = train.astype(np.float64)
    assert abs(x.mean() - 127.5) < 0.5 and abs(x.std() - 40.0 * np.sqrt(1 + 0.05**2)) < 0.5
    # the classes are real: nearest class mean (fitted on train) classifies held-out test images far above chance
    # (0.1; without class means 0.25 would be 8 standard errors above it)
    centroids = np.stack([x[labels == c].reshape(100, -1).mean(axis=0) for c in range(10)])
    t = test.reshape(300, -1).astype(np.float64)
    predicted = np.argmin(((t[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
    assert (predicted == test_labels).mean() > 0.25


def test_the_cifar10_shaped_stand_in_loads_as_a_stored_dataset(monkeypatch, tmp_path):
    from ntkrepro.data.synthetic import class_images

    _small_shaped(monkeypatch)
    kw = dict(substitute="cifar10_shaped", cache_dir=tmp_path, allow_download=False)
    train = load("cifar10", "train", n=100, balanced=True, **kw)
    test = load("cifar10", "test", preprocess="standardize", **kw)
    prov = train.provenance
    assert (prov.name, prov.substituted_for, prov.source, prov.n) == ("cifar10_shaped", "cifar10", "synthetic", 100)
    assert train.x.shape == (100, 32, 32, 3) and np.bincount(train.y).tolist() == [10] * 10
    raw_train, _ = class_images("train", n=600, image_shape=(32, 32, 3), num_classes=10)
    raw_test, raw_labels = class_images("test", n=200, image_shape=(32, 32, 3), num_classes=10)
    mean = (raw_train / 255.0).mean(axis=(0, 1, 2))
    std = (raw_train / 255.0).std(axis=(0, 1, 2))
    np.testing.assert_allclose(test.x, (raw_test / 255.0 - mean) / std, rtol=1e-12)  # the train split's statistics
    np.testing.assert_array_equal(test.y, raw_labels)
    with pytest.raises(DataUnavailable, match="stand-in cifar10_shaped not allowed"):
        load("cifar10", "test", allow_substitute=False, **kw)
    with pytest.raises(ValueError, match="n=601 exceeds the 600 examples of cifar10_shaped/train"):
        load("cifar10", "train", n=601, **kw)


def test_a_generated_dataset_declares_its_shape_and_sizes():
    from ntkrepro.data.registry import DatasetSpec, register

    with pytest.raises(ValueError, match="lacks sizes, image_shape, num_classes, pixel_max"):
        register(DatasetSpec(name="shapeless", kind="generated", description="", generate=lambda split: None))
