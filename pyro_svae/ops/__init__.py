"""Torch-native special functions and sphere geometry."""

from .bessel import ive_ratio, log_iv, log_ive
from .sphere import log_sphere_area, log_vmf_partition, safe_normalize, vmf_mean_resultant

__all__ = [
    "ive_ratio",
    "log_iv",
    "log_ive",
    "log_sphere_area",
    "log_vmf_partition",
    "safe_normalize",
    "vmf_mean_resultant",
]
