"""The benchmark suite's quick mode, so that the benchmarks keep running as the code changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run as bench_run
from benchmarks.run import OWN_PARTS


@pytest.mark.slow
def test_quick_run_writes_every_part(tmp_path: Path) -> None:
    out = tmp_path / "results"

    status = bench_run.main(["--quick", "--out", str(out)])

    assert status == 0
    payload = json.loads((out / "quick.json").read_text(encoding="utf-8"))
    names = [section["name"] for section in payload["sections"]]
    assert names == list(OWN_PARTS)
    for section in payload["sections"]:
        assert section["rows"], f"{section['name']} produced no rows"
        assert section["target_met"] in (True, False), f"{section['name']} did not check its target"
    assert payload["machine"]["cores"] >= 1
    assert payload["machine"]["versions"]["optuna"] != "not installed"
    markdown = (out / "quick.md").read_text(encoding="utf-8")
    for title in ("## Overhead", "## Growth", "## Quality for the budget", "## Scaling", "## Memory"):
        assert title in markdown
    overhead = payload["sections"][0]
    for label, _, wall, training, ratio, _ in overhead["rows"]:
        assert 0 < training <= wall, label
        assert ratio == pytest.approx(wall / training), label


def test_unknown_part_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        bench_run.main(["--quick", "--parts", "overhead,speed"])

    assert excinfo.value.code == 2
    assert "unknown parts speed" in capsys.readouterr().err
