r"""The training objective: an ELBO with β scaling, KL warm-up and capacity annealing.

With reconstruction term :math:`R = \mathbb{E}_q[\log p(x \mid z)]` and :math:`\mathrm{KL}` the divergence
of the guide from the prior (both summed over the data set, minibatches scaled by their plates), the loss
minimised by :class:`pyro.infer.SVI` is

.. math::
    \mathcal{L} = -R + w_t\,\beta\,\mathrm{KL}
    \qquad\text{or, with a capacity schedule,}\qquad
    \mathcal{L} = -R + w_t\,\beta\,N\,\bigl|\mathrm{KL}/N - C_t\bigr|,

where :math:`w_t = \min(1, t / T_{\mathrm{warm}})` is the linear KL warm-up, :math:`C_t` rises linearly from
:math:`C_{\min}` to :math:`C_{\max}` nats per data point over :math:`T_C` steps (Burgess et al. 2018, used by
the ΔVAE), :math:`N` is the size of the ``"data"`` plate and :math:`t` counts calls of
:meth:`AnnealedELBO.loss_and_grads`, i.e. SVI steps (:meth:`AnnealedELBO.set_step` restores it on resume).
With ``beta=1`` and no schedule the loss is the negative ELBO.

The KL of a latent site is analytic when a KL is registered for its (guide, prior) pair and Monte Carlo
(:math:`\log q(z) - \log p(z)` at the sample) otherwise; ``kl="analytic"`` makes a missing closed form an
error and ``kl="mc"`` forces Monte Carlo.

The gradient of a Monte Carlo KL is by default the total derivative of :math:`\log q_\phi(z_\phi) -
\log p(z_\phi)`. With ``kl_gradient="path"`` the score term :math:`\nabla_\phi \log q_\phi(z)|_{z}`,
whose expectation is zero, is dropped and only the path derivative
:math:`\nabla_z \log q_\phi(z) \cdot \mathrm{d}z/\mathrm{d}\phi` is kept ("sticking the landing",
Roeder, Wu & Duvenaud 2017). The gradient stays unbiased, and it vanishes where the guide equals the
prior (an unused latent dimension), as the closed form's does. It is not less noisy everywhere: where
the guide is far from the prior, or a flow step is close to singular (which makes
:math:`\nabla_z \log q` large), its variance can exceed the total gradient's. For a flow,
:mod:`pyro_svae.infer.path_gradient` computes :math:`\nabla_{z_K} \log q_K(z_K)` from the forward
pass without inverting any step, so planar and radial flows are covered. Sites it does not apply to
(a support other than real vectors, e.g. a sphere) keep the total gradient. With ``kl="auto"`` a site
whose KL has a closed form keeps it, and the path gradient does not reach it (a warning says so once
per site); ``kl="mc"`` applies it everywhere, and ``kl="analytic"`` with it is an error. On planar
flows it warns too: at rare draws through a step that nearly collapses one direction, the step's inverse
Jacobian stretches the score the path gradient carries by a hundred to several thousand; in our runs one
such draw gave a gradient 178 times its median norm and a jump of the training loss. Clipping the
gradient norm relative to its recent median (``TrainConfig.grad_clip``, ``--grad-clip 5``) scaled
that step down and the jump did not happen.

``kl_gradient="base_path"`` drops only the score of a flow's base distribution
(:func:`~pyro_svae.infer.path_gradient.base_path_log_prob`); the flow's own parameters keep the total
gradient. It is unbiased, multiplies by no inverse Jacobian (it showed no such tail, and it applies
to flows on spheres too), and is ``"path"`` where there is no flow. At trained planar parameters it
reduced the variance less than ``"path"``: to 0.84–0.87 of the total gradient's, against 0.39–0.53.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pyro.poutine as poutine
import torch
from pyro.distributions import TransformedDistribution
from pyro.distributions.kl import kl_divergence
from pyro.distributions.transforms.planar import ConditionedPlanar
from pyro.distributions.util import scale_and_mask
from pyro.infer import Trace_ELBO
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match, warn_if_nan

from pyro_svae.infer.path_gradient import base_path_log_prob, path_log_prob

__all__ = ["KL_GRADIENTS", "KL_MODES", "AnnealedELBO", "CapacitySchedule", "ELBOTerms"]

KL_MODES = ("auto", "analytic", "mc")
KL_GRADIENTS = ("total", "path", "base_path")
#: what ``kl_gradient="path"`` (and, for closed forms, ``"base_path"``) warns about, once per site
PATH_WARNINGS = {
    "closed form": (
        "kl_gradient={gradient!r} has no effect on site {name!r}: its KL is in closed form "
        "(kl='auto'). Pass kl='mc' to train it with the Monte Carlo KL and that gradient."
    ),
    "planar": (
        "kl_gradient='path' on site {name!r}, a planar flow: on trained planar flows, rare draws "
        "through a step that nearly collapses one direction give the path gradient a heavy tail "
        "(one gave 178 times the median gradient norm and made the training loss jump in our "
        "runs, docs/results.md); kl_gradient='total' and 'base_path' have no such tail, and "
        "clipping outlying gradient norms (grad_clip=5 in TrainConfig, --grad-clip 5) removed "
        "that jump."
    ),
}
PATH_NEEDS_MC = (
    "kl_gradient='path' and 'base_path' act on a Monte Carlo KL, and kl='analytic' uses none: use "
    "kl='mc' (or 'auto', where they reach the sites that have no closed form)"
)


@dataclass(frozen=True)
class CapacitySchedule:
    """Capacity :math:`C_t`, in nats per data point, rising linearly from ``c_min`` to ``c_max`` over ``steps``."""

    c_min: float
    c_max: float
    steps: int

    def __post_init__(self) -> None:
        if self.steps < 0 or self.c_min < 0 or self.c_max < 0:
            raise ValueError(f"capacity needs c_min, c_max >= 0 and steps >= 0, got {self}")

    def __call__(self, step: int) -> float:
        if self.steps == 0:
            return self.c_max
        return self.c_min + (self.c_max - self.c_min) * min(1.0, step / self.steps)


@dataclass(frozen=True)
class ELBOTerms:
    """Per-call values (floats, summed over the data set): reconstruction, KL and the weighted loss."""

    reconstruction: float
    kl: float
    loss: float
    kl_weight: float
    capacity: float | None


def _has_planar_step(fn) -> bool:
    """Whether ``fn`` is a flow with a planar step (static or amortized)."""
    return isinstance(fn, TransformedDistribution) and any(
        isinstance(t, ConditionedPlanar) for t in fn.transforms
    )


class AnnealedELBO(Trace_ELBO):
    """A mean-field ELBO (as :class:`pyro.infer.TraceMeanField_ELBO`) with β, warm-up and capacity.

    :param float beta: weight of the KL term (β-VAE).
    :param int warmup_steps: length of the linear KL warm-up in SVI steps (0: none).
    :param CapacitySchedule capacity: optional capacity schedule; the KL term becomes
        :math:`\\beta N |KL/N - C_t|`.
    :param str kl: ``"auto"`` (analytic when registered), ``"analytic"`` or ``"mc"``.
    :param str kl_gradient: gradient of a Monte Carlo KL: ``"total"`` (the plain reparameterised
        gradient), ``"path"`` (the path derivative only, see the module docstring) or ``"base_path"``
        (the path derivative for a flow's base distribution, the total gradient for the flow's own
        parameters; ``"path"`` where there is no flow). Values are the same in every case.
    :param str data_plate: name of the plate over data points (for :math:`N`).

    Other keyword arguments (``num_particles``, ``vectorize_particles``, ``max_plate_nesting``) are
    :class:`pyro.infer.Trace_ELBO`'s. :attr:`last_terms` holds the :class:`ELBOTerms` of the latest call.
    """

    def __init__(
        self,
        *,
        beta: float = 1.0,
        warmup_steps: int = 0,
        capacity: CapacitySchedule | None = None,
        kl: str = "auto",
        kl_gradient: str = "total",
        data_plate: str = "data",
        **kwargs,
    ) -> None:
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if kl not in KL_MODES:
            raise ValueError(f"kl must be one of {KL_MODES}, got {kl!r}")
        if kl_gradient not in KL_GRADIENTS:
            raise ValueError(f"kl_gradient must be one of {KL_GRADIENTS}, got {kl_gradient!r}")
        if kl_gradient != "total" and kl == "analytic":
            raise ValueError(PATH_NEEDS_MC)
        super().__init__(**kwargs)
        self.beta = float(beta)
        self.warmup_steps = int(warmup_steps)
        self.capacity = capacity
        self.kl_mode = kl
        self.kl_gradient = kl_gradient
        self.data_plate = data_plate
        self.step = 0
        self.last_terms: ELBOTerms | None = None
        self._warned: set[tuple[str, str]] = set()  # (site, reason) pairs already warned about

    # -- schedule ------------------------------------------------------------------------------

    def set_step(self, step: int) -> None:
        """Set the step counter that drives the schedules (e.g. when resuming a run)."""
        self.step = int(step)

    def kl_weight(self) -> float:
        """:math:`w_t \\beta` at the current step."""
        warm = 1.0 if self.warmup_steps == 0 else min(1.0, self.step / self.warmup_steps)
        return self.beta * warm

    def current_capacity(self) -> float | None:
        """:math:`C_t` at the current step, or ``None`` without a capacity schedule."""
        return None if self.capacity is None else self.capacity(self.step)

    # -- terms ---------------------------------------------------------------------------------

    def _get_trace(self, model, guide, args, kwargs):
        """Guide trace and replayed model trace, *without* precomputing log densities.

        Pyro's ``get_importance_trace`` scores every site; here only what the loss uses is scored
        (observed sites always, latent sites only on the Monte Carlo KL path), which saves the density
        of every analytic-KL latent site at each step.
        """
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        if is_validation_enabled():
            check_model_guide_match(model_trace, guide_trace, self.max_plate_nesting)
        return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)

    @staticmethod
    def _log_prob_sum(site, gradient: str = "total") -> torch.Tensor:
        """The site's summed log density, with the gradient ``gradient`` (see ``kl_gradient``)."""
        fn, value = site["fn"], site["value"]
        if gradient == "path":
            log_p = path_log_prob(fn, value)
        elif gradient == "base_path":
            log_p = base_path_log_prob(fn, value)
        else:
            log_p = fn.log_prob(value)
        return scale_and_mask(log_p, scale=site["scale"], mask=site["mask"]).sum()

    def _site_kl(self, model_site, guide_site) -> torch.Tensor:
        if self.kl_mode != "mc":
            try:
                kl = kl_divergence(guide_site["fn"], model_site["fn"])
            except NotImplementedError:
                if self.kl_mode == "analytic":
                    raise NotImplementedError(
                        f"no closed-form KL for site {guide_site['name']!r}: "
                        f"{type(guide_site['fn']).__name__} -> {type(model_site['fn']).__name__}; "
                        "use kl='auto' or kl='mc'"
                    ) from None
            else:
                if self.kl_gradient != "total":
                    self._warn_once(guide_site["name"], "closed form")
                return scale_and_mask(kl, scale=guide_site["scale"], mask=guide_site["mask"]).sum()
        if self.kl_gradient == "path" and _has_planar_step(guide_site["fn"]):
            self._warn_once(guide_site["name"], "planar")
        log_q = self._log_prob_sum(guide_site, self.kl_gradient)
        return log_q - self._log_prob_sum(model_site)

    def _warn_once(self, name: str, reason: str) -> None:
        """Warn once per site and reason about ``kl_gradient="path"`` (see :data:`PATH_WARNINGS`)."""
        if (name, reason) in self._warned:
            return
        self._warned.add((name, reason))
        message = PATH_WARNINGS[reason].format(name=name, gradient=self.kl_gradient)
        warnings.warn(message, UserWarning, stacklevel=3)

    def _num_data(self, model_trace) -> int:
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                for frame in site["cond_indep_stack"]:
                    if frame.name == self.data_plate:  # full_size: the data set, not the minibatch
                        return frame.full_size if frame.full_size is not None else frame.size
        raise ValueError(
            f"capacity annealing needs a plate named {self.data_plate!r} over the data"
        )

    def _terms_particle(self, model_trace, guide_trace):
        reconstruction, kl = 0.0, 0.0
        for name, model_site in model_trace.nodes.items():
            if model_site["type"] != "sample":
                continue
            if model_site["is_observed"]:
                reconstruction = reconstruction + self._log_prob_sum(model_site)
            else:
                kl = kl + self._site_kl(model_site, guide_trace.nodes[name])
        return reconstruction, kl

    def _surrogate(self, model_trace, guide_trace):
        reconstruction, kl = self._terms_particle(model_trace, guide_trace)
        weight = self.kl_weight()
        capacity = self.current_capacity()
        if capacity is None:
            penalty = weight * kl
        else:
            n = self._num_data(model_trace)
            penalty = weight * n * torch.abs(kl / n - capacity)
        return -reconstruction + penalty, reconstruction, kl

    # -- Pyro ELBO interface ---------------------------------------------------------------------

    def _mean_over_particles(self, model, guide, args, kwargs):
        total = recon_total = kl_total = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            surrogate, reconstruction, kl = self._surrogate(model_trace, guide_trace)
            total = total + surrogate / self.num_particles
            recon_total = recon_total + reconstruction / self.num_particles
            kl_total = kl_total + kl / self.num_particles
        warn_if_nan(total, "loss")
        self.last_terms = ELBOTerms(
            reconstruction=torch_item(recon_total),
            kl=torch_item(kl_total),
            loss=torch_item(total),
            kl_weight=self.kl_weight(),
            capacity=self.current_capacity(),
        )
        return total

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return self._mean_over_particles(model, guide, args, kwargs)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return torch_item(self._mean_over_particles(model, guide, args, kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        surrogate = self._mean_over_particles(model, guide, args, kwargs)
        if torch.is_tensor(surrogate) and surrogate.requires_grad:
            surrogate.backward()
        self.step += 1
        return torch_item(surrogate)
