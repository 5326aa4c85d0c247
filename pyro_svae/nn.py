"""Encoder and decoder networks: MLPs (the papers' 256-128 default) and a convolutional pair for images."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["MLP", "ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "make_networks"]


class MLP(nn.Sequential):
    """Fully connected layers with an activation after every layer but (optionally) the last."""

    def __init__(
        self,
        sizes: Sequence[int],
        activation: type[nn.Module] = nn.ReLU,
        *,
        activate_last: bool = False,
    ) -> None:
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(n_in, n_out))
            if activate_last or i < len(sizes) - 2:
                layers.append(activation())
        super().__init__(*layers)


class MLPEncoder(nn.Module):
    """``x (N, D) -> features (N, hidden[-1])``: the trunk shared by every posterior head."""

    def __init__(self, data_dim: int, hidden: Sequence[int] = (256, 128)) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("hidden must list at least one layer size, e.g. (256, 128)")
        self.net = MLP([data_dim, *hidden], activate_last=True)
        self.out_features = hidden[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLPDecoder(nn.Module):
    """``z (N, latent_dim) -> (N, out_features)``, hidden sizes mirrored from the encoder by default."""

    def __init__(
        self, latent_dim: int, out_features: int, hidden: Sequence[int] = (128, 256)
    ) -> None:
        super().__init__()
        self.net = MLP([latent_dim, *hidden, out_features])

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def _check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(image_shape) != 3 or any(s <= 0 for s in image_shape):
        raise ValueError(f"image_shape must be (channels, height, width), got {tuple(image_shape)}")
    c, h, w = (int(s) for s in image_shape)
    if h % 4 or w % 4:
        raise ValueError(
            f"the convolutional networks need height and width divisible by 4, got {(h, w)}"
        )
    return c, h, w


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (32, 64 channels) and a linear layer: ``(N, C*H*W) -> (N, hidden)``."""

    def __init__(self, image_shape: Sequence[int], hidden: int = 256) -> None:
        super().__init__()
        self.image_shape = _check_image_shape(image_shape)
        c, h, w = self.image_shape
        self.net = nn.Sequential(
            nn.Conv2d(c, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * (h // 4) * (w // 4), hidden),
            nn.ReLU(),
        )
        self.out_features = hidden

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(-1, *self.image_shape))


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: ``(N, latent_dim) -> (N, channels_out * H * W)``."""

    def __init__(
        self, latent_dim: int, image_shape: Sequence[int], hidden: int = 256, channels_out: int = 1
    ) -> None:
        super().__init__()
        c, h, w = _check_image_shape(image_shape)
        self.grid = (64, h // 4, w // 4)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, math.prod(self.grid)),
            nn.ReLU(),
            nn.Unflatten(1, self.grid),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, c * channels_out, 4, stride=2, padding=1),
            nn.Flatten(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def make_networks(
    arch: str,
    *,
    data_dim: int,
    latent_dim: int,
    decoder_outputs: int,
    hidden: Sequence[int] = (256, 128),
    image_shape: Sequence[int] | None = None,
) -> tuple[nn.Module, nn.Module]:
    """Build ``(encoder_trunk, decoder)`` for ``arch`` in ``{"mlp", "conv"}``.

    ``decoder_outputs`` is the number of output values per data dimension (1 for Bernoulli logits, 2 for
    a Gaussian's mean and log-scale).
    """
    if arch == "mlp":
        encoder = MLPEncoder(data_dim, hidden)
        decoder = MLPDecoder(latent_dim, decoder_outputs * data_dim, tuple(reversed(hidden)))
    elif arch == "conv":
        if image_shape is None:
            raise ValueError("arch='conv' needs image_shape=(channels, height, width)")
        if math.prod(image_shape) != data_dim:
            raise ValueError(f"image_shape {tuple(image_shape)} does not match data_dim {data_dim}")
        width = hidden[0] if hidden else 256
        encoder = ConvEncoder(image_shape, width)
        decoder = ConvDecoder(latent_dim, image_shape, width, channels_out=decoder_outputs)
    else:
        raise ValueError(f"arch must be 'mlp' or 'conv', got {arch!r}")
    return encoder, decoder
