"""Scale (Chapter 11): what a model costs, how loss falls with compute, and training on many devices.

* :mod:`lmbook.scale.accounting`: parameters, FLOPs and memory by formula, XLA's own
  accounting, utilisation against a measured matmul peak.
* :mod:`lmbook.scale.laws`: power-law fits with intervals, compute-optimal sizes.
* Sharded and multi-process training live with the trainer:
  :mod:`lmbook.train.sharding` and :mod:`lmbook.train.distributed`.
"""

from .accounting import (
    MemoryBreakdown,
    activation_bytes,
    kv_cache_bytes,
    matmul_peak,
    memory_breakdown,
    param_count_formula,
    train_flops,
    utilisation,
    xla_costs,
)
from .laws import PowerLaw, fit_power_law, isoflop_minimum

__all__ = [
    "MemoryBreakdown",
    "PowerLaw",
    "activation_bytes",
    "fit_power_law",
    "isoflop_minimum",
    "kv_cache_bytes",
    "matmul_peak",
    "memory_breakdown",
    "param_count_formula",
    "train_flops",
    "utilisation",
    "xla_costs",
]
