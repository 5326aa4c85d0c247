"""The registry of datasets: files, checksums, sources, shapes, splits, labels and likelihood."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["DATASETS", "SPLITS", "DatasetSpec", "FileSpec", "get_spec"]

SPLITS = ("train", "valid", "test", "train+valid")


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset, relative to the dataset's folder.

    ``md5`` is the checksum of the file as this package reads it (the reference copy its tests were
    run on); a different but well-formed copy of the same data (re-saved, rows reordered) is still
    read, as loading checks structure, not checksums (see :func:`pyro_svae.data.verify_files`).
    ``url_md5`` is the checksum of what ``url`` serves, checked on download; ``None`` where the
    upstream checksum is unknown, in which case a download is only checked structurally when read.
    """

    name: str
    md5: str | None
    url: str
    url_md5: str | None = None
    parts: tuple[str, ...] = ("train", "test")  # which source parts need this file


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the loader needs to know about one dataset.

    ``split_sizes`` are the number of images in train, valid and test. The splits named in
    ``shuffled`` are drawn by a seeded shuffle of the training source (train and valid: MNIST-like
    sets and OMNIGLOT; all three: Frey Faces); the others are the official ones, in file order
    (train, then valid, of the training source; test from its own file or variable).
    ``likelihood`` is the usual observation model: ``"bernoulli"`` (binary or binarised images) or
    ``"grey"`` (continuous).
    """

    name: str
    title: str
    folder: str
    files: tuple[FileSpec, ...]
    image_shape: tuple[int, int, int]
    split_sizes: Mapping[str, int]
    num_classes: int | None
    likelihood: Literal["bernoulli", "grey"]
    grey: bool  # stored values are grey levels, so they can be binarised
    shuffled: tuple[str, ...]
    default_binarize: Mapping[str, str] = field(default_factory=dict)
    torchvision_class: str | None = None

    @property
    def has_labels(self) -> bool:
        """Whether the dataset has class labels."""
        return self.num_classes is not None

    @property
    def dim(self) -> int:
        """Number of pixels of one image."""
        c, h, w = self.image_shape
        return c * h * w

    def files_for(self, parts: tuple[str, ...]) -> tuple[FileSpec, ...]:
        """The files needed to read the given source parts."""
        return tuple(f for f in self.files if set(f.parts) & set(parts))


_BINARISED = {"train": "dynamic", "valid": "fixed", "test": "fixed", "train+valid": "dynamic"}
_AS_STORED = dict.fromkeys(SPLITS, "none")

_TV_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_TV_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_LAROCHELLE = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"


def _idx_files(base: str, md5s: Mapping[str, tuple[str, str]]) -> tuple[FileSpec, ...]:
    # torchvision reads all four files for either split, so each file serves both parts.
    return tuple(
        FileSpec(name, md5, f"{base}{name}.gz", gz_md5) for name, (md5, gz_md5) in md5s.items()
    )


DATASETS: dict[str, DatasetSpec] = {
    "dynamic_mnist": DatasetSpec(
        name="dynamic_mnist",
        title="MNIST (LeCun et al. 1998), grey, binarised afresh at every draw",
        folder="MNIST/raw",
        files=_idx_files(
            _TV_MNIST,
            {
                "train-images-idx3-ubyte": (
                    "6bbc9ace898e44ae57da46a324031adb",
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                ),
                "train-labels-idx1-ubyte": (
                    "a25bea736e30d166cdddb491f175f624",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                ),
                "t10k-images-idx3-ubyte": (
                    "2646ac647ad5339dbf082846283269ea",
                    "9fb629c4189551a2d022fa330f9573f3",
                ),
                "t10k-labels-idx1-ubyte": (
                    "27ae3e4e09519cfbb04c329615203637",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
            },
        ),
        image_shape=(1, 28, 28),
        split_sizes={"train": 50000, "valid": 10000, "test": 10000},
        num_classes=10,
        likelihood="bernoulli",
        grey=True,
        shuffled=("train", "valid"),
        default_binarize=_BINARISED,
        torchvision_class="MNIST",
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        title="Fashion-MNIST (Xiao, Rasul & Vollgraf 2017)",
        folder="FashionMNIST/raw",
        files=_idx_files(
            _TV_FASHION,
            {
                "train-images-idx3-ubyte": (
                    "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                ),
                "train-labels-idx1-ubyte": (
                    "9018921c3c673c538a1fc5bad174d6f9",
                    "25c81989df183df01b3e8a0aad5dffbe",
                ),
                "t10k-images-idx3-ubyte": (
                    "8181f5470baa50b63fa0f6fddb340f0a",
                    "bef4ecab320f06d8554ea6380940ec79",
                ),
                "t10k-labels-idx1-ubyte": (
                    "15d484375f8d13e6eb1aabb0c3f46965",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ),
            },
        ),
        image_shape=(1, 28, 28),
        split_sizes={"train": 50000, "valid": 10000, "test": 10000},
        num_classes=10,
        likelihood="bernoulli",
        grey=True,
        shuffled=("train", "valid"),
        default_binarize=_BINARISED,
        torchvision_class="FashionMNIST",
    ),
    "static_mnist": DatasetSpec(
        name="static_mnist",
        title="statically binarised MNIST (Larochelle & Murray 2011)",
        folder="BinarizedMNIST",
        files=(
            FileSpec(
                "binarized_mnist_train.amat",
                "db28b1a6ae0fe70cbd3da91acf46e477",
                f"{_LAROCHELLE}binarized_mnist_train.amat",
                parts=("train",),
            ),
            FileSpec(
                "binarized_mnist_valid.amat",
                "bf37822a04e94123630de6a7dfd9c9ef",
                f"{_LAROCHELLE}binarized_mnist_valid.amat",
                parts=("train",),
            ),
            FileSpec(
                "binarized_mnist_test.amat",
                "14e41ae11040adba6ab8cb291eda0dd8",
                f"{_LAROCHELLE}binarized_mnist_test.amat",
                parts=("test",),
            ),
        ),
        image_shape=(1, 28, 28),
        split_sizes={"train": 50000, "valid": 10000, "test": 10000},
        num_classes=None,
        likelihood="bernoulli",
        grey=False,
        shuffled=(),
        default_binarize=_AS_STORED,
    ),
    "omniglot": DatasetSpec(
        name="omniglot",
        title="OMNIGLOT 28x28 (Lake et al. 2015), chardata.mat of Burda et al. (2016)",
        folder="OMNIGLOT",
        files=(
            FileSpec(
                "chardata.mat",
                "21ecaf34373511aa7691cf2e0802aa3d",
                "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/chardata.mat",
                "21ecaf34373511aa7691cf2e0802aa3d",
            ),
        ),
        image_shape=(1, 28, 28),
        split_sizes={"train": 23000, "valid": 1345, "test": 8070},
        num_classes=50,  # alphabets
        likelihood="bernoulli",
        grey=True,
        shuffled=("train", "valid"),
        default_binarize=_BINARISED,
    ),
    "caltech101": DatasetSpec(
        name="caltech101",
        title="Caltech 101 Silhouettes 28x28, split 1 (Marlin et al. 2010), silhouette = 1",
        folder="Caltech101Silhouettes",
        files=(
            FileSpec(
                "caltech101_silhouettes_28_split1.mat",
                "4483e9c14b188fd09937f9ea6f9ea777",
                "https://people.cs.umass.edu/~marlin/data/caltech101_silhouettes_28_split1.mat",
                "4483e9c14b188fd09937f9ea6f9ea777",
            ),
        ),
        image_shape=(1, 28, 28),
        split_sizes={"train": 4100, "valid": 2264, "test": 2307},
        num_classes=101,
        likelihood="bernoulli",
        grey=False,
        shuffled=(),
        default_binarize=_AS_STORED,
    ),
    "frey_faces": DatasetSpec(
        name="frey_faces",
        title="Frey Faces (B. Frey), 28x20 grey, seeded 1565/200/200 split",
        folder="FreyFaces",
        files=(
            FileSpec(
                "frey_rawface.mat",
                "ce59a0fead1c5a7c3a1d33356040abeb",
                "https://cs.nyu.edu/~roweis/data/frey_rawface.mat",
            ),
        ),
        image_shape=(1, 28, 20),
        split_sizes={"train": 1565, "valid": 200, "test": 200},
        num_classes=None,
        likelihood="grey",
        grey=True,
        shuffled=("train", "valid", "test"),
        default_binarize=_AS_STORED,
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``; a :class:`ValueError` listing the known names otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]
