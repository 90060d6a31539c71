"""``python -m ebflow_lite.bench``: the benchmark's command line.

The benchmark itself lives in :mod:`ebflow_lite.experiments.bench`.
"""

from __future__ import annotations

import sys

from ebflow_lite.experiments.bench import main

if __name__ == "__main__":
    sys.exit(main())
