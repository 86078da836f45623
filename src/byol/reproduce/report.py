"""A study's records -> ``<name>.md`` (our numbers beside the paper's, the scale, the command, the claims
checked) and ``<name>.png`` (a plot in the style of the paper's figure or table)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from byol.atomic import atomic_write
from byol.reports.plots import save_figure
from byol.reproduce.ladder import claim_lengths, plot as ladder_plot, section as ladder_section
from byol.reproduce.recipes import EQUAL_TIME
from byol.reproduce.results import summarize
from byol.reproduce.studies import Cell, Results, Study


def _references(study: Study) -> dict[str, Cell]:
    return {c.series: c for c in study.cells if c.reference}


def drop(study: Study, res: Results, cell: Cell, metric: str) -> float | None:
    """Our drop (points) from the cell's reference in its series, or None."""
    ref = _references(study).get(cell.series)
    if ref is None or ref.key not in res or cell.key not in res:
        return None
    return res[ref.key][metric] - res[cell.key][metric]


def paper_drop(study: Study, cell: Cell) -> float | None:
    ref = _references(study).get(cell.series)
    if ref is None or ref.paper is None or cell.paper is None:
        return None
    return ref.paper - cell.paper


def _fmt(v: float | None, sd: float | None = None, n: float = 1) -> str:
    if v is None:
        return "-"
    return f"{v:.2f} ± {sd:.2f}" if sd is not None and n > 1 else f"{v:.2f}"


def table(study: Study, res: Results) -> str:
    has_drops = bool(_references(study))
    head = ["setting", "kNN top-1 %", "linear top-1 %"]
    if has_drops:
        head += ["linear drop", "kNN drop", "paper drop"]
    head += ["paper top-1 %", "epochs", "collapsed", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in study.cells:
        r = res.get(cell.key)
        if r is None:
            lines.append(f"| {cell.label} | not run yet |" + " |" * (len(head) - 2))
            continue
        row = [cell.label, _fmt(r["knn"], r["knn_sd"], r["n"]), _fmt(r["linear"], r["linear_sd"], r["n"])]
        if has_drops:
            row += [_fmt(drop(study, res, cell, "linear")), _fmt(drop(study, res, cell, "knn")),
                    _fmt(paper_drop(study, cell))]
        row += [_fmt(cell.paper), f"{r['epochs']:.1f}", f"{r['collapsed'] * r['n']:.0f}/{r['n']:.0f}", f"{r['n']:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def recipes_line(study: Study) -> str:
    """What the scale line adds when cells run their method's own preset (:mod:`byol.reproduce.recipes`)."""
    own = [c for c in study.cells if c.recipe and not c.budget and c.series != EQUAL_TIME]
    if not own:
        return ""
    views = [c.label for c in own if c.recipe_views]
    return ("; each method runs its own preset's loss and optimizer settings ("
            + ", ".join(f"{c.label}: `{c.recipe}`" for c in own) + "; the others the scale preset's)"
            + (f", {' and '.join(views)} also its views" if views else "")
            + ", at the scale preset's data, model, batch and length (equal steps)")


def equal_time_section(study: Study, res: Results) -> list[str]:
    """The table of the cells trained for the wall time of BYOL's cell at the same seed, beside BYOL's."""
    timed = tuple(c for c in study.cells if c.series == EQUAL_TIME)
    if not timed:
        return []
    sub = dataclasses.replace(study, cells=(*[c for c in study.cells if c.method == "byol"][:1], *timed))
    return ["## At equal wall time", "",
            "Each method again, trained for the seconds BYOL's cell of the same seed took (`train.budget`; the "
            "epochs column says how far each got). Wall time depends on the host and on what else ran beside the "
            "cells (each record holds its host, CPU count and threads), and BYOL's seconds are those of its record, "
            "which may come from another session: compare within one sweep on one host.", "",
            table(sub, res), ""]


def claims_lines(study: Study, res: Results, chance: float, ladder: bool = False) -> list[str]:
    """The claims as bullets, or as a table of verdicts (rows x columns) when every claim names its place.
    ``ladder``: the report has a scale ladder, where a claim not measured at the table's length may be."""
    checks = claims(study, res, chance)
    verdict = {True: "holds here", False: "does **not** hold here",
               None: "not measured at this length (see the scale ladder)" if ladder else
               "not measured yet"}
    if not study.claims or not all(c.row and c.column for c in study.claims):
        return [f"- {text}: {verdict[v]}" for text, v in checks]
    rows = list(dict.fromkeys(c.row for c in study.claims))
    cols = list(dict.fromkeys(c.column for c in study.claims))
    cell = {(c.row, c.column): verdict[v] for c, (_, v) in zip(study.claims, checks)}
    return ["| claim | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1),
            *[f"| {r} | " + " | ".join(cell.get((r, k), "-") for k in cols) + " |" for r in rows]]


def claims(study: Study, res: Results, chance: float) -> list[tuple[str, bool | None]]:
    out = []
    for claim in study.claims:
        try:
            verdict = claim.check(res, chance)
        except KeyError:
            verdict = None
        out.append((claim.text, verdict))
    return out


def plot(study: Study, res: Results, out_png: Path) -> Path:
    """Bars of top-1 per cell (paper values as markers), or drops by x / by setting for the robustness studies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    if study.plot == "drops-by-x":
        for series in dict.fromkeys(c.series for c in study.cells):
            cells = [c for c in study.cells if c.series == series and c.key in res]
            xs = [float(c.x) for c in cells]
            ax.plot(xs, [drop(study, res, c, "linear") for c in cells], "o-", label=f"{series} (ours, linear)")
            paper = [(float(c.x), paper_drop(study, c)) for c in cells if paper_drop(study, c) is not None]
            if paper:
                ax.plot(*zip(*paper), "s--", alpha=0.6, label=f"{series} (paper, same ratios)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("drop from the largest batch (points)")
    else:
        done = [c for c in study.cells if c.key in res]
        xs = range(len(done))
        if study.plot == "drops":
            vals = [drop(study, res, c, "linear") or 0.0 for c in done]
            ax.bar(xs, vals, color=["tab:blue" if c.series == "byol" else "tab:orange" for c in done])
            ax.scatter(xs, [paper_drop(study, c) if paper_drop(study, c) is not None else float("nan") for c in done],
                       color="k", marker="_", s=300, label="paper")
            ax.set_ylabel("drop from full views (linear, points)")
        else:
            w = 0.4
            for shift, m in ((-w / 2, "knn"), (w / 2, "linear")):
                ax.bar([x + shift for x in xs], [res[c.key][m] for c in done], w, label=f"{m} (ours)" if m == "linear"
                       else "kNN (ours)", yerr=[res[c.key][f"{m}_sd"] for c in done], capsize=3)
            ax.scatter(xs, [c.paper if c.paper is not None else float("nan") for c in done], color="k", marker="_",
                       s=300, label="paper (ImageNet)")
            ax.set_ylabel("top-1 %")
        ax.set_xticks(list(xs), [c.label for c in done], rotation=20, ha="right", fontsize=8)
    ax.set_title(study.title, fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, out_png)


def provenance_line(records: dict[str, list[dict[str, Any]]]) -> str:
    """Which code made the table's records: one commit, or the commits (with the number of records each) and
    a warning that the rows come from different code; records written before provenance was kept count as
    unknown."""
    commits: dict[str, int] = {}
    for rs in records.values():
        for r in rs:
            p = r.get("provenance") or {}
            c = p.get("git_commit")
            key = (c[:10] + (" (uncommitted changes)" if p.get("git_dirty") else "")) if c else "unknown (not recorded)"
            commits[key] = commits.get(key, 0) + 1
    if len(commits) <= 1:
        return f"- code: commit {next(iter(commits), 'none')}" + ("" if commits else " (no records yet)")
    listed = ", ".join(f"{k}: {n}" for k, n in sorted(commits.items()))
    return f"- code: **the records come from {len(commits)} different commits** ({listed}); compare rows with care"


def machines(records: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """``"CPU (or GPU), precision"`` -> the number of records that ran there. Random-init records (nothing
    trained) are left out."""
    out: dict[str, int] = {}
    for rs in records.values():
        for r in rs:
            if r.get("method") == "random-init":
                continue
            p = r.get("provenance") or {}
            key = f"{p.get('cuda') or p.get('cpu') or 'unknown machine'}, {r.get('precision') or 'unknown precision'}"
            out[key] = out.get(key, 0) + 1
    return out


def _listed(found: dict[str, int]) -> str:
    return "(" + "; ".join(f"{k}: {n}" for k, n in sorted(found.items())) + ")"


def machines_line(records: dict[str, list[dict[str, Any]]]) -> str:
    """Where the table's records ran: one CPU (or GPU) and precision, or each with its number of records and a
    warning. Seconds differ between machines, and so may results: ``train.amp=auto`` trains in bf16 autocast
    on a CPU with AMX, in fp32 on one without."""
    found = machines(records)
    if len(found) <= 1:
        return f"- machine: {next(iter(found), 'none')}"
    return (f"- machine: **the records come from {len(found)} machines or precisions** {_listed(found)}; wall times "
            "are not comparable across them, and results may differ with the precision")


def mixed_lengths_lines(by_length: dict[float, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """One line for each ladder length whose records come from more than one machine or precision."""
    out = []
    for e, records in sorted(by_length.items()):
        found = machines(records)
        if len(found) > 1:
            out.append(f"- at {e:g} epochs the records come from {len(found)} machines or precisions {_listed(found)}")
    return out + ([""] if out else [])


def report_command(md: Path) -> str | None:
    """The command a report written by :func:`write_report` names (None: no such file or line)."""
    if not md.is_file():
        return None
    for line in md.read_text().splitlines():
        if line.startswith("- command: `") and line.endswith("`"):
            return line[len("- command: `"):-1]
    return None


def write_report(study: Study, records: dict[str, list[dict[str, Any]]], out_dir: Path, *, command: str,
                 scale: dict[str, Any], seeds: tuple[int, ...],
                 ladder: dict[float, dict[str, list[dict[str, Any]]]] | None = None) -> tuple[Path, Path | None]:
    """Write ``out_dir/<stem>.md`` and ``out_dir/<stem>.png`` (the stem: the study's name, or its variant's file
    name); a hand-written ``<stem>.notes.md`` next to them
    (the discussion: why a direction differs from the paper) is included when present. ``records`` are the
    table's (one length); ``ladder`` (length -> records) adds the "Scale ladder" section and
    ``<name>-ladder.png`` when records exist at two lengths or more (its columns: the lengths where a claim
    is measured)."""
    res = summarize(study, records)
    every = [records, *(ladder or {}).values()]
    any_rec = next((r for by_key in every for rs in by_key.values() for r in rs), {})
    chance = 100.0 / float(any_rec.get("num_classes", 10))
    wall = sum(r["wall"] for r in res.values())
    png = plot(study, res, out_dir / f"{study.stem}.png") if res else None
    by_length = {e: rs for e, rs in (ladder or {}).items() if any(rs.values())}
    # the section's columns: the lengths where a claim is measured (not those of shared cells' records only)
    columns = {e: by_length[e] for e in claim_lengths(study, by_length, chance)} if len(by_length) >= 2 else {}
    lines = [
        f"# {study.title}", "",
        f"Reproduces the paper's {study.paper_source} at CPU scale. Generated by `byol reproduce {study.name}` "
        "from the per-cell records in `cells/`; numbers are whatever the runs gave.", "",
        f"- command: `{command}`",
        f"- scale: preset `{scale['preset']}`, data `{any_rec.get('data', scale.get('data'))}`, backbone "
        f"`{any_rec.get('backbone', '?')}`, " + (f"{scale['epochs']:g} epochs per cell" if scale.get("epochs") else
                                                  f"budget {scale.get('budget')} per cell")
        + f", seeds {', '.join(map(str, seeds))}, probes fitted on {scale.get('eval_train') or 'all'} labeled train "
        f"images, scored on the test split (chance {chance:.1f}%)" + recipes_line(study),
        f"- total wall time of the records: {wall / 60:.1f} min" + (f"; {study.metric_note}" if study.metric_note else ""),
        "- mean ± sample std over seeds; drops are in points from the reference row of the same method; the paper's "
        "column is ImageNet linear top-1 of a ResNet-50, so compare directions, not values",
        provenance_line(records), machines_line(records), "",
        table(dataclasses.replace(study, cells=tuple(c for c in study.cells if c.series != EQUAL_TIME)), res), "",
        *equal_time_section(study, res), "## The paper's claims, checked", "", *claims_lines(study, res, chance, len(by_length) >= 2), "",
    ]
    if png is not None:
        lines += [f"![{study.title}]({png.name})", ""]
    if columns:
        ladder_png = ladder_plot(study, columns, chance, out_dir / f"{study.stem}-ladder.png")
        lines += ladder_section(study, columns, chance, ladder_png, scale.get("epochs"),
                                extra=mixed_lengths_lines(columns))
    notes = out_dir / f"{study.stem}.notes.md"
    if notes.is_file():
        lines += ["## Discussion", "", notes.read_text().strip(), ""]
    md = out_dir / f"{study.stem}.md"
    atomic_write(md, "\n".join(lines))
    return md, png
