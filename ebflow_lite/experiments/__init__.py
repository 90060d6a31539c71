"""The book's experiment drivers, kept apart from the core library.

* :mod:`ebflow_lite.experiments.toy`: the 2-D grid of methods and densities (chapter 6).
* :mod:`ebflow_lite.experiments.ablation`: the EMA / MaP ablation on the digits (chapter 8).
* :mod:`ebflow_lite.experiments.bench`: per-step cost of every objective, the FC and CNN
  models (chapter 7; ``python -m ebflow_lite.bench``).

Import the one you need, e.g. ``from ebflow_lite.experiments import bench``.
"""
