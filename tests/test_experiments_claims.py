"""The claims map: the list of the paper's claims, and the chapters that write their rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ebflow_lite.experiments import claims

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"


def chapter_claim_ids(chapter: str) -> set[str]:
    """The ids in the ``write_results("NN", ...)`` call of chapter NN's source."""
    (path,) = CHAPTERS.glob(f"{chapter}-*.md")
    source = path.read_text()
    start = source.find(f'write_results("{chapter}"')
    assert start >= 0, f"{path.name} does not call write_results({chapter!r}, ...)"
    end = source.find("```", start)
    return set(re.findall(r'"id": "([^"]+)"', source[start:end]))


def test_paper_claims_are_well_formed() -> None:
    ids = [claim_id for claim_id, *_ in claims.PAPER_CLAIMS]
    assert len(ids) == len(set(ids)), "duplicate claim ids"
    for claim_id, source, text, chapter in claims.PAPER_CLAIMS:
        assert re.fullmatch(r"[a-z0-9-]+", claim_id), claim_id
        assert source and text, claim_id
        assert chapter.isdigit() and len(chapter) == 2, (claim_id, chapter)


@pytest.mark.parametrize("chapter", sorted({ch for *_, ch in claims.PAPER_CLAIMS}))
def test_each_chapter_writes_every_claim_listed_for_it(chapter: str) -> None:
    listed = {claim_id for claim_id, *_, ch in claims.PAPER_CLAIMS if ch == chapter}
    missing = listed - chapter_claim_ids(chapter)
    assert not missing, f"chapter {chapter} writes no row for {sorted(missing)}"


def test_chapters_9_to_11_have_claims_listed() -> None:
    # the appendix no longer points to these chapters: each must own rows of the table
    for chapter in ("09", "10", "11"):
        assert sum(ch == chapter for *_, ch in claims.PAPER_CLAIMS) >= 2, chapter


def test_round_trip_keeps_every_key_and_the_mode(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EBFLOW_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("EBFLOW_FAST", "1")
    row = {"id": "cnn-throughput", "claim": "c", "where": "w", "asserted": False,
           "ours": "SSM 1.5x", "paper": "SSM 33.8x", "deviation": "CPU"}
    path = claims.write_results("11", [row])
    assert path == tmp_path / "ch11.json"
    record = claims.read_results("11")
    assert record["claims"] == [row] and record["chapter"] == "11"
    assert record["mode"] == "fast"
    assert claims.read_results("10") is None  # another chapter's file is missing


def test_read_results_rejects_a_claim_without_its_keys(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EBFLOW_RESULTS_DIR", str(tmp_path))
    incomplete = dict.fromkeys(claims.CLAIM_KEYS[:-1], "x")  # no "deviation"
    (tmp_path / "ch09.json").write_text(json.dumps({"claims": [incomplete]}))
    assert claims.read_results("09") is None
    with pytest.raises(ValueError, match="deviation"):
        claims.write_results("09", [incomplete])
