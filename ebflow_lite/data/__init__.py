"""Data sets that need no network: 2-D toy densities made in code and scikit-learn's digits."""

from ebflow_lite.data.digits import DigitsSplit, digits
from ebflow_lite.data.toy import TOY_DENSITIES, ToyDensity, toy

__all__ = ["TOY_DENSITIES", "DigitsSplit", "ToyDensity", "digits", "toy"]
