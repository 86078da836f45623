import json

from byol.eval.cards import card_filename, make_card, write_card
from byol.reports.curves import curves_table, knn_curve, value_at
from byol.reports.tables import build_report


def _run(path, evals, *, with_elapsed=True):
    """A run directory whose metrics.jsonl has step rows and evaluation rows (seconds, epoch, kNN)."""
    path.mkdir(parents=True)
    rows = []
    for s, e, k in evals:
        rows.append({"step": int(e * 10), "epoch": e, "loss": 1.0, **({"elapsed_s": s - 1} if with_elapsed else {})})
        rows.append({"step": int(e * 10), "epoch": e, "knn_top1": k, "eval_seconds": 0.5,
                     **({"elapsed_s": s} if with_elapsed else {})})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    card = make_card(protocol="linear", metrics={"top1": 50.0, "top5": 90.0}, dataset="d", splits={"train": 1},
                     hyperparameters={}, encoder={"kind": "checkpoint"}, seed=0, timing={"seconds": 1.0})
    write_card(path / "eval", card, card_filename("linear", "d"))
    return path


def test_knn_curve_reads_evaluation_rows_and_value_at_is_the_last_one_before(tmp_path):
    run = _run(tmp_path / "a", [(50.0, 1.0, 40.0), (130.0, 2.0, 45.5), (200.0, 3.0, 47.0)])
    assert knn_curve(run) == [(50.0, 1.0, 40.0), (130.0, 2.0, 45.5), (200.0, 3.0, 47.0)]
    c = knn_curve(run)
    assert value_at(c, 49.9) is None and value_at(c, 50.0) == 40.0 and value_at(c, 129.0) == 40.0
    assert value_at(c, 10_000) == 47.0
    # logs written before elapsed_s existed give no curve (not a wrong one)
    assert knn_curve(_run(tmp_path / "old", [(50.0, 1.0, 40.0)], with_elapsed=False)) == []


def test_curves_table_has_a_column_per_minute_up_to_the_longest_run(tmp_path):
    a = knn_curve(_run(tmp_path / "a", [(50.0, 1.0, 40.0), (130.0, 2.0, 45.5)]))
    b = knn_curve(_run(tmp_path / "b", [(70.0, 1.0, 42.0), (150.0, 2.0, 44.0), (170.0, 2.5, 46.25)]))
    lines = curves_table({"byol": a, "simclr": b}).splitlines()
    assert lines[0] == "| run | 1 min | 2 min | 3 min | last (s, epoch, kNN) |"
    assert lines[2] == "| byol | 40.00 | 40.00 | 45.50 | 130 s, 2.0, 45.50 |"  # at 2 min: the 50 s evaluation
    assert lines[3] == "| simclr | - | 42.00 | 46.25 | 170 s, 2.5, 46.25 |"


def test_report_appends_the_curves_and_draws_them(tmp_path):
    a = _run(tmp_path / "byol", [(50.0, 1.0, 40.0), (130.0, 2.0, 45.5)])
    b = _run(tmp_path / "simclr", [(70.0, 1.0, 42.0)])
    old = _run(tmp_path / "old", [(70.0, 1.0, 42.0)], with_elapsed=False)
    table, md, png = build_report([a, b, old], tmp_path / "r.md")
    cards, curves = md.read_text().split("Online kNN")
    assert "| old | linear |" in cards and "| old |" not in curves
    assert "| byol | 40.00 | 40.00 | 45.50 |" in curves and "| simclr | - | 42.00 | 42.00 |" in curves
    assert (tmp_path / "r-curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.exists()
