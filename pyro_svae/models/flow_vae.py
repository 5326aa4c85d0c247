r"""A VAE whose posteriors are pushed through normalizing flows (static or amortized).

:class:`FlowVAE` is a :class:`~pyro_svae.models.vae.VAE` with the same Pyro model, guide, site names and
plates; only the guide's distribution of each latent group changes, from the base posterior
:math:`q_0(z_0 \mid x)` (Gaussian, vMF, Power Spherical) to the pushforward through the flow steps
:math:`z_K = f_K \circ \dots \circ f_1(z_0)`, a :class:`pyro.distributions.TransformedDistribution` with

.. math:: \log q_K(z_K \mid x) = \log q_0(z_0 \mid x) - \sum_{k=1}^K \log\bigl|\det J_{f_k}(z_{k-1})\bigr|.

The site value is :math:`z_K`, so the model's prior is scored at :math:`z_K` and the decoder gets
:math:`z_K`. In general no closed-form KL exists, so :class:`~pyro_svae.infer.AnnealedELBO` falls back to
the Monte Carlo :math:`\log q_K(z_K) - \log p(z_K)`. A group whose flow is Householder reflections only
is an :class:`~pyro_svae.distributions.OrthogonalFlowDistribution`: the reflections preserve the isotropic
normal and the uniform priors, so its KL is the base posterior's closed form. In all cases
:func:`~pyro_svae.infer.importance_log_likelihood` works unchanged.

.. code-block:: python

    vae = FlowVAE("normal:2", data_dim=784, flow="planar:16", flow_type="amortized")
    vae = FlowVAE("vmf:4", data_dim=784, flow="householder:2+mobius:1")  # flows on S^4
    vae = FlowVAE("ps:3,3", data_dim=784, flow="mobiusmix:4", flow_type="amortized")

A flow term applies to every group its kind supports (see :mod:`pyro_svae.flows.spec`): ``planar``,
``radial`` and ``nice`` to Gaussian groups, ``mobius`` and ``mobiusmix`` to sphere groups,
``householder`` to both; a spec none of whose terms applies to any group is an error.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from pyro_svae.distributions import OrthogonalFlowDistribution
from pyro_svae.flows import EuclideanFlow, FlowSpec, SphereFlow, parse_flow_spec
from pyro_svae.flows.sphere import DEFAULT_MIXTURE_COMPONENTS
from pyro_svae.latent_spec import LatentSpec

from .vae import VAE

__all__ = ["FlowVAE"]


class FlowVAE(VAE):
    """A :class:`VAE` with flow posteriors.

    :param latent: latent spec, as for :class:`VAE`.
    :param int data_dim: as for :class:`VAE`.
    :param flow: a flow spec string (``"planar:16"``, ``"householder:2+mobius:1"``, ...), a
        :class:`~pyro_svae.flows.FlowSpec`, or ``None`` (no flow: the plain :class:`VAE`).
    :param str flow_type: ``"static"`` (parameters shared across data points) or ``"amortized"``
        (parameters from the encoder features); ``None`` keeps the spec's type (``"static"`` for strings).
    :param int coupling_hidden: hidden width of NICE's shift networks.
    :param int mixture_components: number of Möbius dilations in each ``mobiusmix`` step.
    :param float planar_min_det: lower bound δ in [0, 1) on the Jacobian determinant of every planar
        step (default 0: Pyro's planar step; see :class:`~pyro_svae.flows.BoundedPlanar`). A value
        above 0 needs a planar step in ``flow``.

    Other keyword arguments are :class:`VAE`'s (``arch="conv"`` included).
    """

    def __init__(
        self,
        latent: str | LatentSpec,
        data_dim: int,
        *,
        flow: str | FlowSpec | None = None,
        flow_type: str | None = None,
        coupling_hidden: int = 64,
        mixture_components: int = DEFAULT_MIXTURE_COMPONENTS,
        planar_min_det: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(latent, data_dim, **kwargs)
        self.flow_spec = parse_flow_spec(flow, flow_type)
        if planar_min_det and not (self.flow_spec and self.flow_spec.has_kind("planar")):
            where = (
                f"the flow {str(self.flow_spec)!r} has none"
                if self.flow_spec
                else "there is no flow"
            )
            raise ValueError(f"planar_min_det={planar_min_det!r} bounds planar steps, but {where}")
        self.flows = nn.ModuleDict()
        spec = self.flow_spec
        if spec is None:
            return
        context = self.encoder.out_features if spec.amortized else None
        for index, group in enumerate(self.groups):
            if group.is_sphere:
                terms = spec.sphere_terms()
                if terms:
                    self.flows[str(index)] = SphereFlow(
                        group.ambient_dim,
                        group.count,
                        terms,
                        context_dim=context,
                        components=mixture_components,
                    )
            else:
                terms = spec.euclidean_terms()
                if terms:
                    self.flows[str(index)] = EuclideanFlow(
                        group.ambient_dim,
                        terms,
                        context_dim=context,
                        coupling_hidden=coupling_hidden,
                        planar_min_det=planar_min_det,
                    )
        if not self.flows:
            raise ValueError(
                f"the flow {str(spec)!r} applies to no group of the latent space {str(self.spec)!r} "
                "(planar, radial, nice: Gaussian groups; mobius, mobiusmix: spheres; householder: both)"
            )

    @property
    def flow_type(self) -> str | None:
        return None if self.flow_spec is None else self.flow_spec.flow_type

    def has_flow(self, index: int) -> bool:
        """Whether latent group ``index`` has a flow posterior."""
        return str(index) in self.flows

    def has_closed_form_kl(self, index: int) -> bool:
        """Whether the KL of latent group ``index`` is in closed form: no flow, or Householder steps
        only (:class:`~pyro_svae.distributions.OrthogonalFlowDistribution`)."""
        flow = self.flows[str(index)] if self.has_flow(index) else None
        return flow is None or all(kind == "householder" for kind in flow.kinds)

    def flow_transforms(self, index: int, h: Tensor) -> list:
        """The transforms of group ``index`` for encoder features ``h`` (empty without a flow)."""
        key = str(index)
        if key not in self.flows:
            return []
        flow = self.flows[key]
        return flow.transforms(h if flow.amortized else None)

    def posteriors(self, x: Tensor) -> list:
        """The guide's distribution of every latent site: base posteriors pushed through the flows."""
        h = self.encoder(x)
        out = []
        for index, (group, head) in enumerate(zip(self.groups, self.heads, strict=True)):
            base = self._posterior(group, *head(h))
            transforms = self.flow_transforms(index, h)
            if not transforms:
                out.append(base)
            elif self.has_closed_form_kl(index):  # Householder only: the base's KL
                out.append(OrthogonalFlowDistribution(base, transforms))
            else:
                out.append(dist.TransformedDistribution(base, transforms))
        return out

    @torch.no_grad()
    def posterior_mean_features(self, x: Tensor) -> list[Tensor]:
        """Per factor, the base posterior's mean (Gaussian) or mode direction pushed through the flow."""
        feats = []
        for group, fn in zip(self.groups, self.posteriors(x), strict=True):
            transforms = []
            if isinstance(fn, dist.TransformedDistribution):
                fn, transforms = fn.base_dist, fn.transforms
            point = fn.mean if group.family == "normal" else fn.loc
            for transform in transforms:
                point = transform(point)
            if group.family != "normal" and group.count > 1:
                feats.extend(point.transpose(0, 1).unbind(1))
            else:
                feats.append(point)
        return feats
