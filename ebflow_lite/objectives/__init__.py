"""Training objectives. Each is ``objective(model, x, ...) -> scalar`` on a batch of *data* x.

Models that have a ``preprocess`` method (an :class:`ebflow_lite.EBFlow`) see their
preprocessed variable; any other module with an ``energy`` method sees ``x`` as it is.
The score-matching objectives all estimate the per-dimension Hyvarinen objective; see
:mod:`ebflow_lite.objectives.score_matching` for the table of conventions.
:func:`get` looks an objective up by name, with its options bound.
:func:`adversarial_ebm_loss` returns two losses (an energy and a sampler) and so is not in
that table.
"""

from ebflow_lite.objectives.adversarial import AdversarialLosses, adversarial_ebm_loss
from ebflow_lite.objectives.likelihood import ml
from ebflow_lite.objectives.nce import fce_flow_loss, nce, nce_logits
from ebflow_lite.objectives.registry import OBJECTIVES, SCORE_MATCHING, Objective, get
from ebflow_lite.objectives.score_matching import dsm, exact_sm, fdssm, ssm
from ebflow_lite.objectives.sml import sml

__all__ = [
    "OBJECTIVES", "SCORE_MATCHING", "AdversarialLosses", "Objective", "adversarial_ebm_loss",
    "dsm", "exact_sm", "fce_flow_loss", "fdssm",
    "get", "ml", "nce", "nce_logits", "sml", "ssm",
]
