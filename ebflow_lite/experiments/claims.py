"""Chapter results on disk, for the "Paper claims, reproduced" appendix.

A chapter that tests a claim of the paper ends with :func:`write_results`, which stores its
key numbers as ``_build/results/chNN.json`` (one small JSON file per chapter, written
atomically). The appendix reads every such file with :func:`read_results` and builds one
table from them. Chapters run in any order (``myst build --execute`` may run them in
parallel, ``pytest`` runs one at a time), so a file can be missing, or left over from an
earlier build in the other run mode: :func:`read_results` returns None for a missing or
unreadable file, and every record carries the mode and the time it was written, which the
appendix prints next to the numbers.

Each claim is a dict with the keys of :data:`CLAIM_KEYS`:

* ``id``: a short key that names the paper's claim (see :data:`PAPER_CLAIMS`), so the
  appendix can put the row in its place; other ids are listed after the known ones;
* ``claim``: the paper's statement, in a few words;
* ``where``: the chapter section (or cell) that tests it;
* ``asserted``: True when the chapter asserts it, False when it only reports a number;
* ``ours``: our measured number, as text (with its interval where there is one);
* ``paper``: the paper's number, as text;
* ``deviation``: how and why ours differs (or "none").

The folder is ``_build/results`` next to the package's source tree (the repository root
for an editable install), or ``$EBFLOW_RESULTS_DIR`` when that is set.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ebflow_lite.config import mode_name

CLAIM_KEYS = ("id", "claim", "where", "asserted", "ours", "paper", "deviation")

#: The paper's claims the appendix lists, in order: ``(id, source, claim, chapter)``; the
#: source is where the paper (its poster, or its official README) states the claim.
PAPER_CLAIMS = (
    ("no-determinant", "abstract", "score matching trains a flow without any Jacobian "
     "determinant or inverse", "07"),
    ("toy-on-par", "Table 1", "on the 2-D densities, SSM, DSM and FDSSM are on par with ML "
     "and SML (KL)", "06"),
    ("toy-fisher", "Table 1", "the same in the Fisher divergence", "06"),
    ("nll-close-to-ml", "Table 2", "with EMA and MaP, score-matching NLL is within about 1% "
     "of ML (MNIST, FC)", "08"),
    ("nll-order", "Table 2", "NLL order SSM < DSM < FDSSM (MNIST, FC)", "08"),
    ("step-speedup", "Table 2", "EBFlow steps are faster than ML steps (FC: 1.5x SML to "
     "16x FDSSM at D = 784)", "07"),
    ("runtime-growth", "Figure 2(a)", "ML's step time grows much faster with D than score "
     "matching's", "07"),
    ("crossover", "Figure 2(a)", "score matching is cheaper than ML above some D", "07"),
    ("map-ablation", "Table 4", "MaP is what makes score matching work on images "
     "(SSM 1720.5 -> 1092.8 with EMA)", "08"),
    ("ema-ablation", "Table 4", "EMA alone improves NLL a little", "08"),
    ("grad-norm", "Figure 3", "without MaP the SSM gradient norm is far larger", "08"),
    ("glow-inverse", "Figure 4", "Glow trained by SSM: NLL 728 vs 1637 for the prior "
     "score-matched flow", "09"),
    ("glow-close-to-ml", "Table 2 (on a Glow)", "SSM and DSM train a Glow close to ML's NLL "
     "(the paper reports no Glow trained by ML)", "09"),
    ("glow-dsm-like-ssm", "official README (Figure 4)", "a Glow trains as well by DSM as by "
     "SSM", "09"),
    ("cnn-runtime-growth", "Figure 2(a) (CNN)", "on the CNN model ML's step time grows much "
     "faster with D than score matching's", "09"),
    ("mcmc-imputation", "Figure 5", "MCMC from the energy generates and imputes data", "10"),
    ("mcmc-cost", "poster (complexity)", "MCMC generation costs O(D^2 L T), inverse "
     "generation O(D^3 L)", "10"),
    ("fashion-table2", "Table 2 (on Fashion-MNIST)", "the main table's ordering on another "
     "image set", "11"),
    ("fashion-close-to-ml", "Table 2 (on Fashion-MNIST)", "SSM and DSM NLL within about 1% "
     "of ML's (FC and CNN)", "11"),
    ("cnn-throughput", "Table 2 (CNN)", "the CNN model trains more batches per second by "
     "SSM, DSM and FDSSM than by ML", "11"),
    ("early-training", "Figure 2(b)", "SSM and DSM reach a better NLL than ML early in "
     "training, most on the CNN", "11"),
)


def results_dir() -> Path:
    """The folder the chapter results live in (not created here)."""
    override = os.environ.get("EBFLOW_RESULTS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "_build" / "results"


def _path(chapter: str) -> Path:
    if not (chapter.isdigit() and len(chapter) == 2):
        raise ValueError(f"chapter must be two digits such as '06', got {chapter!r}")
    return results_dir() / f"ch{chapter}.json"


def write_results(chapter: str, claims: Sequence[dict], extra: dict | None = None) -> Path:
    """Store a chapter's claims (and any extra numbers) as ``chNN.json``; return the path.

    Raises:
        ValueError: a claim lacks one of :data:`CLAIM_KEYS`, or ``chapter`` is not two digits.
    """
    for claim in claims:
        missing = [k for k in CLAIM_KEYS if k not in claim]
        if missing:
            raise ValueError(f"claim {claim.get('claim', claim)!r} lacks {missing}")
    record = {
        "chapter": chapter,
        "mode": mode_name(),
        "written": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "claims": [dict(c) for c in claims],
        "extra": extra or {},
    }
    path = _path(chapter)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle, indent=1, default=float)
    os.replace(tmp, path)  # atomic: a reader sees the old file or the new one, never half
    return path


def read_results(chapter: str) -> dict | None:
    """The record :func:`write_results` stored for ``chapter``, or None if there is none.

    A file that cannot be parsed, or that lacks the expected keys, also gives None.
    """
    path = _path(chapter)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("claims"), list):
        return None
    if not all(isinstance(c, dict) and all(k in c for k in CLAIM_KEYS)
               for c in record["claims"]):
        return None
    return record


__all__ = ["CLAIM_KEYS", "PAPER_CLAIMS", "read_results", "results_dir", "write_results"]
