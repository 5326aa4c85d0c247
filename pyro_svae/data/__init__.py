"""The standard VAE benchmark datasets, read from their standard files and held in memory.

>>> import torch
>>> from pyro_svae.data import load_dataset
>>> train = load_dataset("dynamic_mnist", "train")  # doctest: +SKIP
>>> g = torch.Generator().manual_seed(0)
>>> for x, y, idx in train.batches(100, generator=g):  # doctest: +SKIP
...     pass  # x: (100, 784) fresh Bernoulli draws, y: (100,) labels, idx: rows of train

Files are looked for under one data root (:func:`default_data_root`: ``$PYRO_SVAE_DATA``, else a
per-user cache folder; ``--data-dir`` in every example and CLI via :func:`add_data_dir_argument`),
in the layouts of :data:`DATASETS`.
"""

from .batches import Batch, BatchLoader, bernoulli
from .datasets import BINARIZE_MODES, FIXED_BINARIZATION_SEED, load_dataset, load_splits
from .errors import DatasetCorruptError, DatasetNotFoundError
from .files import dataset_folder, verify_files
from .imagedata import BinaryImageData, ImageData
from .registry import DATASETS, SPLITS, DatasetSpec, FileSpec
from .root import ENV_VAR, add_data_dir_argument, default_data_root, resolve_data_root
from .splits import split_indices

__all__ = [
    "BINARIZE_MODES",
    "DATASETS",
    "ENV_VAR",
    "FIXED_BINARIZATION_SEED",
    "SPLITS",
    "Batch",
    "BatchLoader",
    "BinaryImageData",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "FileSpec",
    "ImageData",
    "add_data_dir_argument",
    "bernoulli",
    "dataset_folder",
    "default_data_root",
    "load_dataset",
    "load_splits",
    "resolve_data_root",
    "split_indices",
    "verify_files",
]
