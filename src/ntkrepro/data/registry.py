"""The dataset registry: one ``DatasetSpec`` entry per dataset (files, URLs, SHA-256, parser, shape).

Adding a dataset is one ``register(DatasetSpec(...))`` call; a class subset of a stored dataset (CIFAR-2,
a stand-in pair such as ``fashion_mnist_tshirt_shirt``) is one ``register(class_subset(...))`` call.
Checksums:
- MNIST, Fashion-MNIST: SHA-256 of the four published ``.gz`` files and of their decompressed IDX
  payloads (the payload checksums match the publishers' MD5s of the uncompressed files; Debian's
  ``dataset-fashion-mnist`` recompresses the files, so its copies verify by payload).
- CIFAR-10: SHA-256 of ``cifar-10-python.tar.gz`` (6d958be0...); the publisher lists only its MD5,
  c58f30108f718f92721af3b95e74349a, which belongs to the same file. The SHA-256 is what is verified.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ntkrepro.data import formats, synthetic

SPLITS = ("train", "test")
KINDS = ("files", "bundled", "synthetic", "generated")


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its name (in the cache folder and at the URLs), download URLs (tried in
    order), the SHA-256 of the file and, for gzip files, of the decompressed payload."""

    name: str
    urls: tuple[str, ...]
    sha256: str
    content_sha256: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """How to obtain and parse one dataset.

    kind "files": ``files[split]`` are fetched (path, cache, system dirs, download) and handed to
    ``parse(paths, split) -> (images uint8 (n, H, W, C), labels (n,))``.
    kind "bundled": ``read_bundled(split) -> (file, images, labels)`` reads a file that ships with a
    package. kind "synthetic": ``generate(split, n, seed, options) -> (x, y, num_classes)``,
    ``check_options(options)`` validates the options before any draw. kind "generated": a fixed synthetic
    image set that behaves like a stored one (sizes, class subsets, training-split statistics, a stand-in):
    ``generate(split) -> (images uint8 (n, H, W, C), labels (n,))``.
    ``classes``: keep only these classes of the parsed data, relabelled 0..k-1 (CIFAR-2; see
    ``class_subset``). ``class_names``: the name of each label as stored in the files (by stored label).
    ``pixel_max``: the largest raw pixel value (255, or 16 for digits), used by ``scale01``.
    ``sizes``: examples per split (before ``classes``), for an early check of ``n``.
    """

    name: str
    kind: str
    description: str
    num_classes: int | None = None
    image_shape: tuple[int, int, int] | None = None
    pixel_max: float | None = None
    sizes: Mapping[str, int] | None = None
    files: Mapping[str, tuple[RemoteFile, ...]] = field(default_factory=dict)
    parse: Callable | None = None
    read_bundled: Callable | None = None
    generate: Callable | None = None
    check_options: Callable | None = None
    classes: tuple[int, ...] | None = None
    class_names: tuple[str, ...] | None = None
    folder: str | None = None
    system_dirs: tuple[str, ...] = ()

    @property
    def cache_folder(self) -> str:
        """Sub-folder of the cache dir holding the files (shared by datasets built on the same files)."""
        return self.folder or self.name

    @property
    def is_image(self) -> bool:
        return self.image_shape is not None


REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to the registry (``replace=True`` to overwrite an entry of the same name)."""
    if spec.kind not in KINDS:
        raise ValueError(f"dataset {spec.name}: kind must be one of {list(KINDS)}, got {spec.kind!r}")
    needed = {"files": ("parse",), "bundled": ("read_bundled",), "synthetic": ("generate", "check_options"),
              "generated": ("generate", "sizes", "image_shape", "num_classes", "pixel_max")}
    missing = [attr for attr in needed[spec.kind] if getattr(spec, attr) is None]
    if spec.kind == "files" and set(spec.files) != set(SPLITS):
        missing.append(f"files for splits {list(SPLITS)}")
    if missing:
        raise ValueError(f"dataset {spec.name} ({spec.kind}) lacks {', '.join(missing)}")
    if spec.name in REGISTRY and not replace:
        raise ValueError(f"dataset {spec.name} is already registered (pass replace=True)")
    REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> DatasetSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(REGISTRY)}") from None


def class_subset(base: DatasetSpec, name: str, classes: Sequence[int | str], *, description: str,
                 sizes: Mapping[str, int]) -> DatasetSpec:
    """``base`` restricted to ``classes`` (stored labels or their names in ``base.class_names``), relabelled
    0..k-1 in the order given, sharing ``base``'s files and cache folder: CIFAR-2, a stand-in class pair.
    ``sizes``: examples per split of the kept classes. One-line ValueError for an unknown class name or
    label, a repeated class or fewer than two classes."""
    if base.kind not in ("files", "bundled") or base.classes is not None:
        raise ValueError(f"dataset {name}: {base.name} is not a stored classification dataset to take classes of")
    names = base.class_names or ()
    keep = []
    for c in classes:
        if isinstance(c, str):
            if c not in names:
                raise ValueError(f"dataset {name}: unknown class {c!r} of {base.name} (known: {', '.join(names)})")
            keep.append(names.index(c))
        elif isinstance(c, int) and not isinstance(c, bool) and 0 <= c < base.num_classes:
            keep.append(c)
        else:
            raise ValueError(f"dataset {name}: class {c!r} is not a label 0..{base.num_classes - 1} of {base.name}")
    if len(keep) < 2 or len(set(keep)) < len(keep):
        raise ValueError(f"dataset {name}: needs at least 2 distinct classes of {base.name}, got {list(classes)}")
    return replace(base, name=name, description=description, num_classes=len(keep), sizes=dict(sizes),
                   classes=tuple(keep), folder=base.cache_folder)


def _idx_files(base_urls: tuple[str, ...], checksums: dict[str, tuple[str, str]]):
    """``{split: (images, labels)}`` for an MNIST-layout dataset; checksums: name -> (gz, payload)."""
    def remote(name):
        return RemoteFile(name, tuple(u + name for u in base_urls), *checksums[name])

    return {
        "train": (remote("train-images-idx3-ubyte.gz"), remote("train-labels-idx1-ubyte.gz")),
        "test": (remote("t10k-images-idx3-ubyte.gz"), remote("t10k-labels-idx1-ubyte.gz")),
    }


MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                                   "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                                   "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                                  "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                                  "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": ("08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
                                   "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train-labels-idx1-ubyte.gz": ("b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
                                   "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "t10k-images-idx3-ubyte.gz": ("78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
                                  "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "t10k-labels-idx1-ubyte.gz": ("42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
                                  "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
CIFAR10_ARCHIVE = RemoteFile(
    "cifar-10-python.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
)
# The publisher lists MD5 eb9058c3a382ffc7106e4002c42a8d85; this is the SHA-256 of that same file (as pinned
# by Keras' and torchvision's loaders).
CIFAR100_ARCHIVE = RemoteFile(
    "cifar-100-python.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
    "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Xiao et al. 2017 (arXiv:1708.07747), Table 1
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
DIGIT_CLASSES = tuple(str(d) for d in range(10))
DIGITS_TRAIN = 1347  # first 1347 rows train, last 450 test: train_test_split(test_size=0.25, shuffle=False)


def read_digits(split: str) -> tuple[Path, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16) as (n, 8, 8, 1) images; fixed
    split without shuffling: the first 1347 rows are train, the last 450 test."""
    path = Path(str(importlib.resources.files("sklearn.datasets.data") / "digits.csv.gz"))
    images, labels = formats.parse_digits_csv(path)
    rows = slice(None, DIGITS_TRAIN) if split == "train" else slice(DIGITS_TRAIN, None)
    return path, images[rows], labels[rows]


register(DatasetSpec(
    name="mnist", kind="files", description="MNIST handwritten digits, IDX gz",
    num_classes=10, image_shape=(28, 28, 1), pixel_max=255.0, sizes={"train": 60000, "test": 10000},
    files=_idx_files(("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
                     MNIST_SHA256),
    parse=formats.parse_idx_pair, class_names=DIGIT_CLASSES,
))
FASHION_MNIST = register(DatasetSpec(
    name="fashion_mnist", kind="files", description="Fashion-MNIST (Zalando), IDX gz",
    num_classes=10, image_shape=(28, 28, 1), pixel_max=255.0, sizes={"train": 60000, "test": 10000},
    files=_idx_files(("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"),
                     FASHION_MNIST_SHA256),
    parse=formats.parse_idx_pair, system_dirs=("/usr/share/datasets/fashion-mnist",),
    class_names=FASHION_MNIST_CLASSES,
))
# A hard stand-in pair for CIFAR-2 (experiments/arora2019/README.md, "Protocol: the stand-in class pair"):
# the two classes of Fashion-MNIST that classifiers confuse most; 6,000 / 1,000 images each.
register(class_subset(FASHION_MNIST, "fashion_mnist_tshirt_shirt", ("T-shirt/top", "Shirt"),
                      description="Fashion-MNIST classes 0 (T-shirt/top) and 6 (Shirt)",
                      sizes={"train": 12000, "test": 2000}))
CIFAR10 = register(DatasetSpec(
    name="cifar10", kind="files", description="CIFAR-10, python pickles in tar.gz",
    num_classes=10, image_shape=(32, 32, 3), pixel_max=255.0, sizes={"train": 50000, "test": 10000},
    files={"train": (CIFAR10_ARCHIVE,), "test": (CIFAR10_ARCHIVE,)},
    parse=formats.parse_cifar10_archive, class_names=CIFAR10_CLASSES,
))
register(class_subset(CIFAR10, "cifar2", ("airplane", "automobile"),
                      description="CIFAR-2: CIFAR-10 classes 0 (airplane) and 1 (automobile)",
                      sizes={"train": 10000, "test": 2000}))
register(DatasetSpec(
    name="cifar100", kind="files", description="CIFAR-100 (fine labels), python pickles in tar.gz",
    num_classes=100, image_shape=(32, 32, 3), pixel_max=255.0, sizes={"train": 50000, "test": 10000},
    files={"train": (CIFAR100_ARCHIVE,), "test": (CIFAR100_ARCHIVE,)},
    parse=formats.parse_cifar100_archive,
))
# The rehearsal's stand-in for CIFAR-10 (conf/data/cifar10.yaml, scale rehearsal): its shape, classes and
# split sizes, synthetic pixels (ntkrepro.data.synthetic.class_images).
CIFAR10_SHAPED = register(DatasetSpec(
    name="cifar10_shaped", kind="generated",
    description="synthetic images shaped like CIFAR-10 (32x32x3 uint8, 10 balanced classes, 50,000/10,000)",
    num_classes=10, image_shape=(32, 32, 3), pixel_max=255.0, sizes={"train": 50000, "test": 10000},
    generate=lambda split: synthetic.class_images(split, n=CIFAR10.sizes[split], image_shape=(32, 32, 3),
                                                  num_classes=10),
))
register(DatasetSpec(
    name="digits", kind="bundled", description="scikit-learn's bundled 8x8 digits",
    num_classes=10, image_shape=(8, 8, 1), pixel_max=16.0, sizes={"train": DIGITS_TRAIN, "test": 450},
    read_bundled=read_digits, class_names=DIGIT_CLASSES,
))
register(DatasetSpec(
    name="circle", kind="synthetic", description="points on the unit circle (options: grid)",
    generate=synthetic.circle, check_options=synthetic.check_circle_options,
))
register(DatasetSpec(
    name="gaussian", kind="synthetic", description="N(0, I) inputs (options: dim, target)",
    generate=synthetic.gaussian, check_options=synthetic.check_gaussian_options,
))
