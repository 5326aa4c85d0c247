r"""Variational autoencoders with spherical, product-of-spheres and Gaussian latent spaces.

The model and guide are plain Pyro functions:

.. code-block:: python

    vae = VAE("vmf:4,4", data_dim=784)          # S^4 x S^4, uniform prior on each factor
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), TraceMeanField_ELBO())
    svi.step(x_batch, num_data=50000)

* the parameters are registered as ``pyro.module(vae.name, vae)`` would (names ``"vae$$$encoder..."``):
  the guide registers all of them, the model the decoder's, so :meth:`VAE.guide` can be paired
  with a custom model that calls :meth:`VAE.decode` (a custom guide paired with :meth:`VAE.model`
  must register the parts of the VAE it uses itself, e.g. with ``pyro.module``); ``pyro.plate("data", N, subsample=...)`` scales a minibatch to
  the data set; each latent *group* of the spec (a run of equal factors, see
  :meth:`pyro_svae.latent_spec.LatentSpec.groups`) is one ``pyro.sample`` site; a group of ``K > 1`` equal
  spheres sits in ``pyro.plate("<site>_factors", K)`` with one concentration per factor;
* sites are named ``"z"`` for a single group and ``"z_0", "z_1", ...`` otherwise; the observation is ``"x"``;
* the sphere priors are uniform, the Gaussian prior standard normal, and every (posterior, prior) pair has
  a registered KL, so ``TraceMeanField_ELBO`` is analytic.

Plate dimensions: ``"data"`` is ``dim=-1`` and the factor plates ``dim=-2``, so a latent site of a group of
``K`` factors has batch shape ``(K, N)``; ``max_plate_nesting = 2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.params import param_with_module_name
from torch import Tensor, nn
from torch.distributions import kl_divergence

from pyro_svae.distributions import (
    DiscretizedLogistic,
    HypersphericalUniform,
    PowerSpherical,
    SphericalDiffusion,
    VonMisesFisher,
)
from pyro_svae.latent_spec import LatentGroup, LatentSpec, parse_latent_spec
from pyro_svae.nn import make_networks
from pyro_svae.ops import safe_normalize

__all__ = ["LIKELIHOODS", "VAE"]

LIKELIHOODS = ("bernoulli", "gaussian", "discretized_logistic")
#: log-scale floor of the Gaussian likelihood (pixels in [0, 1])
_MIN_LOG_SCALE = -5.0
#: log-scale floor of the discretised logistic (its log_prob is exact for any scale; this keeps
#: early training stable: exp(-7) is a quarter of a grey level)
_MIN_LOG_SCALE_DISCRETE = -7.0


def _decoder_part(group: LatentGroup, z: Tensor) -> Tensor:
    """A group's sample as decoder input: ``(..., K, N, m) -> (..., 1, N, K*m)`` for a factor plate,
    so the plate's slot stays as a singleton; other groups are already ``(..., N, d)``."""
    if group.family != "normal" and group.count > 1:
        return z.movedim(-3, -2).flatten(-2).unsqueeze(-3)
    return z


def _concat_latents(parts: list[Tensor]) -> Tensor:
    """Concatenate per-group latents along the last dim after broadcasting their batch dims."""
    batch = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
    return torch.cat([p.expand(*batch, p.shape[-1]) for p in parts], dim=-1)


class _GroupHead(nn.Module):
    """Linear head producing the posterior parameters of one latent group from encoder features."""

    def __init__(self, group: LatentGroup, in_features: int, covariance: str) -> None:
        super().__init__()
        self.group = group
        d = group.ambient_dim
        if group.family == "normal":
            self.covariance = covariance
            n_scale = d * (d + 1) // 2 if covariance == "full" else d
            self.linear = nn.Linear(in_features, d + n_scale)
        else:
            self.linear = nn.Linear(in_features, group.count * (d + 1))

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        out = self.linear(h)
        g = self.group
        if g.family == "normal":
            return out[..., : g.ambient_dim], out[..., g.ambient_dim :]
        out = out.reshape(*h.shape[:-1], g.count, g.ambient_dim + 1)
        return out[..., :-1], out[..., -1]


class VAE(nn.Module):
    r"""A VAE whose latent space is given by a latent spec such as ``"vmf:4,4"`` or ``"normal:10"``.

    :param latent: a latent spec string (see :func:`pyro_svae.latent_spec.parse_latent_spec`) or
        :class:`~pyro_svae.latent_spec.LatentSpec`.
    :param int data_dim: dimension of a flattened data point (784 for MNIST).
    :param hidden: encoder hidden sizes; the decoder mirrors them (default ``(256, 128)`` as in the papers).
    :param str arch: ``"mlp"`` or ``"conv"`` (needs ``image_shape``).
    :param image_shape: ``(channels, height, width)`` of a data point, for ``arch="conv"`` and plots.
    :param str likelihood: ``"bernoulli"`` (binary data), ``"discretized_logistic"`` (8-bit grey data
        scaled to [0, 1]: a probability mass over the 256 levels, see
        :class:`~pyro_svae.distributions.DiscretizedLogistic`) or ``"gaussian"`` (a density on [0, 1]);
        the last two take a per-pixel location and scale from the decoder.
    :param float min_concentration: floor added to ``softplus`` for vMF / Power Spherical concentrations.
    :param str covariance: ``"diag"`` or ``"full"`` for Gaussian posteriors.
    :param float min_diffusion_time: floor added to ``softplus`` for diffusion times.
    :param diffusion_steps: ``None`` for the exact diffusion sampler, or the number of random-walk steps.
    :param str name: prefix of the ``pyro.module`` name.
    """

    max_plate_nesting = 2

    def __init__(
        self,
        latent: str | LatentSpec,
        data_dim: int,
        *,
        hidden: Sequence[int] = (256, 128),
        arch: str = "mlp",
        image_shape: Sequence[int] | None = None,
        likelihood: str = "bernoulli",
        min_concentration: float = 1.0,
        covariance: str = "diag",
        min_diffusion_time: float = 1e-4,
        diffusion_steps: int | None = None,
        name: str = "vae",
    ) -> None:
        super().__init__()
        self._registry: dict[str, list[tuple[str, Tensor]]] | None = None
        self._registry_key: tuple | None = None
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if covariance not in ("diag", "full"):
            raise ValueError(f"covariance must be 'diag' or 'full', got {covariance!r}")
        if min_concentration < 0 or min_diffusion_time <= 0:
            raise ValueError("min_concentration must be >= 0 and min_diffusion_time > 0")
        self.spec = parse_latent_spec(latent)
        self.groups = self.spec.groups()
        self.data_dim = int(data_dim)
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.likelihood = likelihood
        self.min_concentration = float(min_concentration)
        self.min_diffusion_time = float(min_diffusion_time)
        self.covariance = covariance
        self.diffusion_steps = diffusion_steps
        self.name = name
        self.encoder, self.decoder = make_networks(
            arch,
            data_dim=self.data_dim,
            latent_dim=self.spec.ambient_dim,
            decoder_outputs=1 if likelihood == "bernoulli" else 2,
            hidden=hidden,
            image_shape=image_shape,
        )
        self.heads = nn.ModuleList(
            [_GroupHead(g, self.encoder.out_features, covariance) for g in self.groups]
        )
        self.site_names = (
            ("z",) if len(self.groups) == 1 else tuple(f"z_{i}" for i in range(len(self.groups)))
        )

    # ------------------------------------------------------------------------------------------
    # Distributions
    # ------------------------------------------------------------------------------------------

    def _posterior(self, group: LatentGroup, raw_loc: Tensor, raw_scale: Tensor):
        if group.family == "normal":
            if self.covariance == "full":
                d = group.ambient_dim
                tril = torch.zeros(*raw_loc.shape, d, dtype=raw_loc.dtype, device=raw_loc.device)
                rows, cols = torch.tril_indices(d, d, device=raw_loc.device)
                tril[..., rows, cols] = raw_scale
                diag = F.softplus(torch.diagonal(tril, dim1=-2, dim2=-1)) + 1e-5
                tril = tril.tril(-1) + torch.diag_embed(diag)
                return dist.MultivariateNormal(raw_loc, scale_tril=tril)
            return dist.Normal(raw_loc, F.softplus(raw_scale) + 1e-5).to_event(1)
        # (N, K, m) -> (K, N, m) for the factor plate at dim=-2; (N, m) when K == 1
        loc = safe_normalize(raw_loc)
        if group.count > 1:
            loc, raw_scale = loc.transpose(0, 1), raw_scale.transpose(0, 1)
        else:
            loc, raw_scale = loc.squeeze(-2), raw_scale.squeeze(-1)
        if group.family == "diffusion":
            time = F.softplus(raw_scale) + self.min_diffusion_time
            return SphericalDiffusion(loc, time, steps=self.diffusion_steps)
        concentration = F.softplus(raw_scale) + self.min_concentration
        cls = VonMisesFisher if group.family == "vmf" else PowerSpherical
        return cls(loc, concentration)

    def _prior(self, group: LatentGroup, like: Tensor):
        d = group.ambient_dim
        if group.family == "normal":
            zeros = like.new_zeros(d)
            if self.covariance == "full":
                return dist.MultivariateNormal(
                    zeros, scale_tril=torch.eye(d, dtype=like.dtype, device=like.device)
                )
            return dist.Normal(zeros, 1.0).to_event(1)
        return HypersphericalUniform(d, dtype=like.dtype, device=like.device)

    def has_flow(self, index: int) -> bool:
        """Whether latent group ``index`` has a flow posterior (never, in this class)."""
        return False

    def has_closed_form_kl(self, index: int) -> bool:
        """Whether the KL of latent group ``index`` to its prior is in closed form (always, in this
        class)."""
        return True

    def posteriors(self, x: Tensor) -> list:
        """The guide's distribution of every latent site for data ``x`` (no Pyro side effects)."""
        h = self.encoder(x)
        return [
            self._posterior(g, *head(h)) for g, head in zip(self.groups, self.heads, strict=True)
        ]

    # ------------------------------------------------------------------------------------------
    # Pyro model and guide
    # ------------------------------------------------------------------------------------------

    def _data_plate(self, x: Tensor, num_data: int | None, subsample: Tensor | None):
        n = x.shape[0]
        if subsample is None and num_data is not None and num_data != n:
            subsample = torch.arange(
                n, device=x.device
            )  # any length-n index: only the N/n scale matters
        return pyro.plate(
            "data", num_data if num_data is not None else n, subsample=subsample, dim=-1
        )

    def _factor_plate(self, index: int, group: LatentGroup):
        return pyro.plate(f"{self.site_names[index]}_factors", group.count, dim=-2)

    def sample_latents(
        self, prior: bool, fns: list | None = None, like: Tensor | None = None
    ) -> Tensor:
        """Emit one ``pyro.sample`` per latent group (inside the caller's data plate) and return the
        decoder input ``(N, ambient_dim)``: priors if ``prior`` else the given posterior ``fns``."""
        parts = []
        for i, group in enumerate(self.groups):
            fn = self._prior(group, like) if prior else fns[i]
            if group.family != "normal" and group.count > 1:
                with self._factor_plate(i, group):
                    z = pyro.sample(self.site_names[i], fn)
            else:
                z = pyro.sample(self.site_names[i], fn)
            parts.append(_decoder_part(group, z))
        return _concat_latents(parts)

    def decode(self, z: Tensor) -> Tensor:
        """Decoder output for latents ``z (..., N, ambient_dim)``: logits, or (mean, log-scale) stacked."""
        out = self.decoder(z.reshape(-1, z.shape[-1]))
        return out.reshape(*z.shape[:-1], out.shape[-1])

    def likelihood_dist(self, decoded: Tensor):
        """The observation distribution (event dim 1) for a decoder output."""
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=decoded, validate_args=False).to_event(1)
        mean, log_scale = decoded[..., : self.data_dim], decoded[..., self.data_dim :]
        if self.likelihood == "discretized_logistic":
            scale = torch.exp(log_scale.clamp(min=_MIN_LOG_SCALE_DISCRETE))
            return DiscretizedLogistic(torch.sigmoid(mean), scale).to_event(1)
        scale = torch.exp(log_scale.clamp(min=_MIN_LOG_SCALE))
        return dist.Normal(torch.sigmoid(mean), scale).to_event(1)

    def model(
        self, x: Tensor, *, num_data: int | None = None, subsample: Tensor | None = None
    ) -> Tensor:
        """Generative model ``p(x | z) p(z)``; ``num_data`` (the data set size) scales a minibatch.

        Registers the decoder's parameters with Pyro (the guide registers all of them).
        """
        self._register("model")
        with self._data_plate(x, num_data, subsample):
            z = self.sample_latents(prior=True, like=x)
            decoded = self.decode(z)
            pyro.sample("x", self.likelihood_dist(decoded), obs=x)
        return decoded

    def guide(
        self, x: Tensor, *, num_data: int | None = None, subsample: Tensor | None = None
    ) -> Tensor:
        """Amortised posterior ``q(z | x)``.

        Registers every trainable parameter of the VAE with Pyro, decoder included, so a custom
        model that calls :meth:`decode` trains the decoder too.
        """
        self._register("guide")
        fns = self.posteriors(x)
        with self._data_plate(x, num_data, subsample):
            return self.sample_latents(prior=False, fns=fns)

    def _register(self, part: str) -> None:
        """``pyro.module(self.name, self)`` in two parts, under the same names ``name$$$path``.

        The guide registers every trainable parameter, the model only the decoder's: a custom model
        paired with :meth:`guide` still trains the whole network (a custom guide paired with
        :meth:`model` must register the encoder and heads it uses), and with both halves of this
        class the encoder is registered once per step.

        The names are cached; the cache is rebuilt whenever :attr:`name`, the set of parameters
        (``load_state_dict(assign=True)``, a new submodule) or their ``requires_grad`` flags change,
        which costs one walk over the module tree per call (a few microseconds). As with
        ``pyro.module``, a name already in Pyro's param store keeps the store's tensor: after
        replacing parameter objects, call ``pyro.clear_param_store()`` (and make a new optimizer)
        so that the new ones are the ones trained.
        """
        key = (self.name, tuple(_parameter_fingerprint(self, [])))
        if self._registry is None or self._registry_key != key:
            prefix = self.decoder_prefix
            self._registry = {"model": [], "guide": []}
            for path, value in self.named_parameters():
                if value.requires_grad:
                    entry = (param_with_module_name(self.name, path), value)
                    self._registry["guide"].append(entry)
                    if path.startswith(prefix):
                        self._registry["model"].append(entry)
            # holding the parameters in the registry keeps their ids from being reused
            self._registry_key = key
        for full_name, value in self._registry[part]:
            pyro.param(full_name, value)

    #: parameter paths registered by the model as well as by the guide
    decoder_prefix = "decoder."

    # ------------------------------------------------------------------------------------------
    # Conveniences
    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def posterior_mean_features(self, x: Tensor) -> list[Tensor]:
        """Per factor, the posterior mode direction (spheres) or mean (Gaussians), shape ``(N, m)``."""
        feats = []
        for group, fn in zip(self.groups, self.posteriors(x), strict=True):
            if group.family == "normal":
                feats.append(fn.mean)
            elif group.count > 1:
                feats.extend(fn.loc.transpose(0, 1).unbind(1))
            else:
                feats.append(fn.loc)
        return feats

    @torch.no_grad()
    def kl_per_factor(self, x: Tensor) -> list[Tensor | None]:
        """Per latent group, KL(q(z|x) ‖ p(z)) of each factor, shape ``(N, k)``: ``k`` sphere
        factors, the ``d`` dimensions of a diagonal Gaussian, or 1 for a full-covariance one (and for
        a Gaussian with a Householder flow). ``None`` for a group whose flow posterior has no
        closed-form KL (every flow but Householder-only ones). A row sums to the ELBO's KL."""
        out: list[Tensor | None] = []
        for index, (group, q) in enumerate(zip(self.groups, self.posteriors(x), strict=True)):
            if not self.has_closed_form_kl(index):
                out.append(None)
            elif group.family == "normal" and isinstance(q, dist.Independent):
                base = q.base_dist
                out.append(kl_divergence(base, dist.Normal(torch.zeros_like(base.loc), 1.0)))
            else:  # spheres: (count, N) under the factor plate, or (N,); full covariance: (N,)
                kl = kl_divergence(q, self._prior(group, x))
                out.append(kl.transpose(0, 1) if kl.dim() == 2 else kl.unsqueeze(-1))
        return out

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Mean reconstruction of ``x`` from one posterior sample, shape ``(N, data_dim)``."""
        parts = [
            _decoder_part(g, fn.rsample())
            for g, fn in zip(self.groups, self.posteriors(x), strict=True)
        ]
        z = _concat_latents(parts).reshape(x.shape[0], -1)
        return self.likelihood_dist(self.decode(z)).base_dist.mean

    @torch.no_grad()
    def generate(self, num_samples: int) -> Tensor:
        """Mean images decoded from ``num_samples`` prior draws, shape ``(num_samples, data_dim)``."""
        like = next(self.parameters())
        parts = []
        for g in self.groups:
            prior = self._prior(g, like)
            shape = (
                (num_samples, g.count) if g.family != "normal" and g.count > 1 else (num_samples,)
            )
            parts.append(prior.sample(shape).reshape(num_samples, -1))
        return self.likelihood_dist(self.decode(torch.cat(parts, -1))).base_dist.mean


def _parameter_fingerprint(module: nn.Module, out: list) -> list:
    """``id`` and ``requires_grad`` of every parameter slot of ``module``'s tree, in order.

    The same information as iterating ``module.parameters()``, at a fifth of the cost (no name
    strings, no de-duplication), to tell cheaply whether a cached list of parameters is stale.
    """
    for param in module._parameters.values():
        if param is not None:
            out.append(id(param))
            out.append(param.requires_grad)
    for child in module._modules.values():
        if child is not None:
            _parameter_fingerprint(child, out)
    return out
