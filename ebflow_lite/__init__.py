"""ebflow_lite: energy-based normalizing flows trained with score matching.

The companion library of the executable textbook on EBFlow (Chao et al., NeurIPS 2023).
"""

from ebflow_lite import layers, objectives
from ebflow_lite.config import fast_mode, pick
from ebflow_lite.device import pick_device
from ebflow_lite.flow import EBFlow, standard_normal_log_prob
from ebflow_lite.reproducibility import seed_everything
from ebflow_lite.training import History, fit, load_checkpoint, save_checkpoint

__version__ = "0.1.0"

__all__ = [
    "EBFlow",
    "History",
    "fast_mode",
    "fit",
    "layers",
    "load_checkpoint",
    "objectives",
    "pick",
    "pick_device",
    "save_checkpoint",
    "seed_everything",
    "standard_normal_log_prob",
]
