"""ebflow_lite: energy-based normalizing flows trained with score matching.

The companion library of the executable textbook on EBFlow (Chao et al., NeurIPS 2023).
``import ebflow_lite`` loads the core; ``plotting``, ``bench``, ``experiments`` and
``ablation`` (which pull in matplotlib or run experiments) are imported on demand, e.g.
``from ebflow_lite import plotting``.
"""

from ebflow_lite import data, ebm, layers, metrics, models, objectives, sampling
from ebflow_lite.autodiff import batch_jacobian
from ebflow_lite.config import fast_mode, pick
from ebflow_lite.device import pick_device
from ebflow_lite.ema import EMA
from ebflow_lite.flow import EBFlow, standard_normal_log_prob
from ebflow_lite.reproducibility import seed_everything
from ebflow_lite.training import History, fit, load_checkpoint, save_checkpoint

__version__ = "0.1.0"

__all__ = [
    "EBFlow",
    "EMA",
    "History",
    "batch_jacobian",
    "data",
    "ebm",
    "fast_mode",
    "fit",
    "layers",
    "load_checkpoint",
    "metrics",
    "models",
    "objectives",
    "pick",
    "pick_device",
    "sampling",
    "save_checkpoint",
    "seed_everything",
    "standard_normal_log_prob",
]
