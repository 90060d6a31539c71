"""Training objectives. Each is ``objective(model, x, ...) -> scalar`` on a batch of *data* x.

Models that have a ``preprocess`` method (an :class:`ebflow_lite.EBFlow`) see their
preprocessed variable; any other module with an ``energy`` method sees ``x`` as it is.
"""

from ebflow_lite.objectives.likelihood import ml

__all__ = ["ml"]
