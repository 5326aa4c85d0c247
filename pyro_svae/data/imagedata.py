"""In-memory image sets: flat float images in [0, 1], labels, and drawing by index."""

from __future__ import annotations

from typing import ClassVar

import torch

from .batches import BatchLoader, bernoulli

__all__ = ["BinaryImageData", "ImageData"]

Index = int | slice | torch.Tensor


def _take(t: torch.Tensor, idx: Index) -> torch.Tensor:
    """``t[idx]``, through ``index_select`` for a 1-D integer index (far cheaper per batch)."""
    if isinstance(idx, torch.Tensor) and idx.dim() == 1 and idx.dtype in (torch.int64, torch.int32):
        return t.index_select(0, idx.to(t.device))
    return t[idx]


class ImageData:
    """A split of a dataset held in memory.

    ``images`` is a float tensor (N, D) with values in [0, 1], ``D = prod(image_shape)``, each row
    an image flattened row-major; ``labels`` a LongTensor (N,) or ``None``; ``source_indices`` the
    rows of the source these images are (for checking splits). ``data[idx]`` draws the images at
    ``idx`` (a LongTensor, int or slice), which is what ``pyro.plate("data", len(data),
    subsample=idx)`` needs; :meth:`batches` iterates over mini-batches.
    """

    likelihood: ClassVar[str] = "grey"

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        image_shape: tuple[int, ...],
        name: str = "",
        split: str = "",
        num_classes: int | None = None,
        source_indices: torch.Tensor | None = None,
    ) -> None:
        if images.dim() != 2 or not images.is_floating_point():
            raise ValueError(
                f"images must be a float tensor (N, D), got {images.dtype} {images.shape}"
            )
        d = 1
        for s in image_shape:
            d *= s
        if images.shape[1] != d:
            raise ValueError(
                f"images have {images.shape[1]} pixels, image_shape {image_shape} has {d}"
            )
        if images.numel():
            low, high = torch.aminmax(images)
            if not (low >= 0 and high <= 1):  # also catches NaN
                raise ValueError(f"image values must lie in [0, 1], got [{low}, {high}]")
        if labels is not None and labels.shape != (images.shape[0],):
            raise ValueError(f"labels shape {tuple(labels.shape)} != ({images.shape[0]},)")
        self.images = images
        self.labels = None if labels is None else labels.long()
        self.image_shape = tuple(image_shape)
        self.name = name
        self.split = split
        self.num_classes = num_classes
        self.source_indices = source_indices

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def dim(self) -> int:
        """Number of pixels D of one image."""
        return self.images.shape[1]

    @property
    def device(self) -> torch.device:
        """The device the tensors are on."""
        return self.images.device

    def draw(self, idx: Index, generator: torch.Generator | None = None) -> torch.Tensor:
        """The images at ``idx`` as the model observes them (here: as stored)."""
        return _take(self.images, idx)

    def __getitem__(self, idx: Index) -> torch.Tensor:
        return self.draw(idx)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> BatchLoader:
        """Mini-batches ``(x, y, idx)`` for one epoch per iteration; see :class:`BatchLoader`."""
        return BatchLoader(
            self, batch_size, shuffle=shuffle, drop_last=drop_last, generator=generator
        )

    def _init_kwargs(self) -> dict:
        return {
            "image_shape": self.image_shape,
            "name": self.name,
            "split": self.split,
            "num_classes": self.num_classes,
            "source_indices": self.source_indices,
        }

    def to(self, device: str | torch.device) -> ImageData:
        """A copy with the tensors on ``device`` (``self`` if already there)."""
        if torch.device(device) == self.device:
            return self
        labels = None if self.labels is None else self.labels.to(device)
        return type(self)(self.images.to(device), labels, **self._init_kwargs())

    def _describe(self) -> str:
        return self.likelihood

    def __repr__(self) -> str:
        labels = "no labels" if self.labels is None else f"{self.num_classes} classes"
        return (
            f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)}, "
            f"image_shape={self.image_shape}, {self._describe()}, {labels}, device={self.device})"
        )


class BinaryImageData(ImageData):
    """Images observed as binary: stored 0/1 or, if ``dynamic``, binarised afresh.

    With ``dynamic=True``, ``images`` holds the grey values p and every :meth:`draw` (hence every
    batch and every ``data[idx]``) is a new Bernoulli(p) sample, from the given generator or torch's
    global RNG.
    """

    likelihood: ClassVar[str] = "bernoulli"

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        dynamic: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(images, labels, **kwargs)
        if not dynamic and images.numel() and not ((images == 0) | (images == 1)).all():
            raise ValueError(
                "static binary images must be 0 or 1; use dynamic=True for grey values"
            )
        self.dynamic = dynamic

    def draw(self, idx: Index, generator: torch.Generator | None = None) -> torch.Tensor:
        """The images at ``idx``: a fresh Bernoulli draw if ``dynamic``, else the stored 0/1."""
        x = _take(self.images, idx)
        return bernoulli(x, generator) if self.dynamic else x

    def _init_kwargs(self) -> dict:
        return {**super()._init_kwargs(), "dynamic": self.dynamic}

    def _describe(self) -> str:
        return "bernoulli, dynamic" if self.dynamic else "bernoulli, static"
