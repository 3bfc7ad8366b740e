"""No identifier leaves the raw data: marker strings in every identifying tag never reach an output file or a log line.

See :mod:`reliability.marker_chain` for the chain (phantom with markers -> ingest -> embed -> experiment -> predict).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability.marker_chain import find_markers, run_marked_chain


@pytest.mark.slow
def test_no_identifier_reaches_outputs_or_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    lines, found = run_marked_chain(tmp_path)
    assert lines and found == []
    assert find_markers(tmp_path / "ich", skip=()) != []  # the search finds markers where they are
