"""Inference: the annealed ELBO used with ``pyro.infer.SVI`` and the evaluation metrics."""

from .elbo import AnnealedELBO, CapacitySchedule, ELBOTerms
from .evaluation import evaluate, importance_log_likelihood, knn_accuracy
from .path_gradient import path_log_prob

__all__ = [
    "AnnealedELBO",
    "CapacitySchedule",
    "ELBOTerms",
    "evaluate",
    "importance_log_likelihood",
    "knn_accuracy",
    "path_log_prob",
]
