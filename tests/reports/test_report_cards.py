import json

import numpy as np
import pytest
from PIL import Image

from byol.cli.main import main
from byol.errors import ByolError
from byol.eval.cards import card_filename, make_card, write_card
from byol.reports.tables import build_report, card_rows, collect_cards


def _card(protocol, top1, **kw):
    return make_card(protocol=protocol, metrics=kw.pop("metrics", {"top1": top1, "top5": top1 + 5}),
                     dataset=kw.pop("dataset", "fashion-mnist"), splits={"train": 10, "test": 5},
                     hyperparameters=kw.pop("hp", {"labels": "100%"}), encoder={"kind": "checkpoint"}, seed=0,
                     timing={"seconds": 1.0}, **kw)


@pytest.fixture
def two_runs(tmp_path):
    r1, r2 = tmp_path / "fm1", tmp_path / "fm2"
    write_card(r1 / "eval", _card("linear", 81.5), card_filename("linear", "fashion-mnist"))
    write_card(r1 / "eval", _card("knn", 0, metrics={"k20": 80.0, "k200": 78.25}), "knn-fashion-mnist.json")
    write_card(r1 / "eval", _card("finetune", 70.0, hp={"labels": "1%"},
                                  baseline={"name": "scratch", "metrics": {"top1": 55.0, "top5": 90.0}}),
               card_filename("finetune", "fashion-mnist", "1pct"))
    write_card(r2 / "eval" / "sub", _card("linear", 84.25), "linear-fashion-mnist.json")  # nested out dir
    (r2 / "eval" / "labels-x.json").write_text(json.dumps({"labeled": [1, 2]}))  # not a card: ignored
    (r2 / "eval" / "features").mkdir(parents=True)
    (r2 / "eval" / "features" / "k.json").write_text(json.dumps({"schema": "byol.eval-card/1"}))  # cache: ignored
    (r2 / "eval" / "broken.json").write_text("{not json")
    return r1, r2


def test_card_fields(tmp_path):
    c = _card("linear", 80.0)
    for key in ("schema", "protocol", "metrics", "dataset", "splits", "hyperparameters", "encoder", "seed", "timing",
                "label_subset", "byol_version", "time"):
        assert key in c
    assert card_filename("finetune", "/data/my imgs/", "1pct") == "finetune-my_imgs-1pct.json"


def test_rows_per_card_kind():
    rows = card_rows("r", _card("knn", 0, metrics={"k20": 80.0, "k200": 78.0}))
    assert [r["eval"] for r in rows] == ["knn k=20", "knn k=200"] and rows[1]["top1"] == 78.0
    rows = card_rows("r", _card("finetune", 70.0, hp={"labels": "10%"}, baseline={"name": "scratch",
                                                                                   "metrics": {"top1": 50.0}}))
    assert [(r["eval"], r["top1"], r["labels"]) for r in rows] == [("finetune", 70.0, "10%"),
                                                                   ("finetune (scratch)", 50.0, "10%")]


def test_report_table_and_chart_from_two_runs(two_runs, tmp_path):
    cards = collect_cards(two_runs)
    assert sorted(run for run, _ in cards) == ["fm1", "fm1", "fm1", "fm2"]
    table, md, png = build_report(two_runs, tmp_path / "rep" / "report.md")
    lines = table.splitlines()
    assert lines[0] == "| run | eval | dataset | labels | top-1 % | top-5 % |" and len(lines) == 2 + 6
    assert "| fm1 | linear | fashion-mnist | 100% | 81.50 | 86.50 |" in lines
    assert "| fm2 | linear | fashion-mnist | 100% | 84.25 | 89.25 |" in lines
    assert "| fm1 | finetune (scratch) | fashion-mnist | 1% | 55.00 | 90.00 |" in lines
    assert "| fm1 | knn k=200 | fashion-mnist | 100% | 78.25 | - |" in lines
    assert md.read_text().strip() == table
    img = np.asarray(Image.open(png))
    assert png.suffix == ".png" and img.shape[0] > 100 and img.shape[1] > 100


def test_report_cli(two_runs, tmp_path, capsys):
    out = tmp_path / "r.md"
    assert main(["report", *map(str, two_runs), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| fm2 | linear |" in text and out.is_file() and out.with_suffix(".png").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "no evaluation results found" in capsys.readouterr().err
    with pytest.raises(ByolError):
        collect_cards([tmp_path / "missing"])


def test_cards_are_read_by_the_module_that_writes_them_without_importing_torch(two_runs):
    import subprocess
    import sys

    import byol.eval.cards as written
    import byol.reports.tables as reports

    assert reports.collect_cards is written.collect_cards and not hasattr(reports, "CARD_SCHEMA")
    code = ("import sys; from byol.reports.tables import build_report, collect_cards; "
            f"assert len(collect_cards({[str(d) for d in two_runs]!r})) == 4; "
            "assert 'torch' not in sys.modules, 'reading cards imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)
