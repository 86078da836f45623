"""The scale ladder: each claim's margin against training length.

A study run at several lengths (``byol reproduce NAME --epochs 3 10 30``) has records per (cell, seed,
length). A claim's margin (:class:`byol.reproduce.studies.Measure`, points, positive: it holds) is computed
per seed, pairing the cells' records of the same seed, so each length gives a mean and a spread over seeds.
At a length the claim *holds* or *does not* when its mean margin is outside the seed spread (``|mean| >=
sd``), and is *within noise* otherwise; a claim *holds from N epochs on* when it holds at N and at every
longer length measured. The paper's claims are about 300-1000 epoch runs; the ladder shows which of them a
CPU-scale run approaches, and from which length.
"""

from __future__ import annotations

import math
import statistics
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byol.reports.plots import save_figure
from byol.reproduce.results import summarize
from byol.reproduce.studies import Claim, Study

Records = dict[str, list[dict[str, Any]]]  #: cell key -> records (one per seed) at one length

HOLDS, FAILS, NOISE, UNMEASURED = "holds", "does not hold", "within noise", "not measured"


@dataclass(frozen=True)
class Rung:
    """One claim at one length: the per-seed margins and what they say."""

    epochs: float
    margins: tuple[float, ...]  #: one per seed that has records of every cell the claim reads
    verdict: str  #: HOLDS | FAILS | NOISE | UNMEASURED
    monitor: bool = False  #: held by the claim's ``also`` sign (the collapse monitor), not by its margin

    @property
    def n(self) -> int:
        return len(self.margins)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.margins) if self.margins else math.nan

    @property
    def sd(self) -> float:
        return statistics.stdev(self.margins) if self.n > 1 else 0.0


def seed_margins(study: Study, claim: Claim, records: Records, chance: float) -> tuple[float, ...]:
    """The claim's margin at each seed, on the records of that seed (a seed missing a cell the claim reads
    gives no margin)."""
    seeds = sorted({int(r["seed"]) for rs in records.values() for r in rs})
    out = []
    for seed in seeds:
        res = summarize(study, {k: [r for r in rs if int(r["seed"]) == seed] for k, rs in records.items()})
        try:
            m = claim.margin(res, chance)
        except KeyError:
            m = None
        if m is not None:
            out.append(float(m))
    return tuple(out)


def rung(study: Study, claim: Claim, epochs: float, records: Records, chance: float) -> Rung:
    margins = seed_margins(study, claim, records, chance)
    if not margins:
        return Rung(epochs, margins, UNMEASURED)
    r = Rung(epochs, margins, NOISE)
    also = claim.measure.also
    if also is not None and also(summarize(study, records)):
        return Rung(epochs, margins, HOLDS, monitor=True)
    if abs(r.mean) < r.sd:
        return r
    return Rung(epochs, margins, HOLDS if claim.measure.holds(r.mean) else FAILS)


def ladder(study: Study, by_length: dict[float, Records], chance: float) -> list[tuple[Claim, list[Rung]]]:
    """Each claim with its rungs, shortest length first."""
    lengths = sorted(by_length)
    return [(c, [rung(study, c, e, by_length[e], chance) for e in lengths]) for c in study.claims]


def claim_lengths(study: Study, by_length: dict[float, Records], chance: float) -> list[float]:
    """The lengths at which at least one claim of ``study`` is measured (records of another study's cells
    that share a config, e.g. BYOL's at a length this study never ran, measure none)."""
    rows = ladder(study, by_length, chance)
    return [e for i, e in enumerate(sorted(by_length)) if any(rs[i].verdict != UNMEASURED for _, rs in rows)]


def epochs_phrase(e: float) -> str:
    """``1 epoch``, ``2.5 epochs``."""
    return f"{e:g} epoch" + ("" if e == 1 else "s")


def holds_from(rungs: list[Rung]) -> str:
    """"holds from N epochs on" (the shortest length from which it holds at every longer one measured,
    outside noise; "holds at N epochs (the only length measured)" for a single rung) or "does not hold up to
    N epochs (the longest run)", with what the shorter rungs said."""
    measured = [r for r in rungs if r.verdict != UNMEASURED]
    if not measured:
        return "not measured yet"
    start = len(measured)
    while start > 0 and measured[start - 1].verdict == HOLDS:
        start -= 1
    if len(measured) == 1 and start == 0:  # one rung says nothing about "from N on"
        return f"holds at {epochs_phrase(measured[0].epochs)} (the only length measured)"
    if start < len(measured):
        every = " (every length measured)" if start == 0 else ""
        return f"holds from {epochs_phrase(measured[start].epochs)} on{every}"
    last = measured[-1]
    out = f"does not hold up to {epochs_phrase(last.epochs)} (the longest run)"
    if last.verdict == NOISE:
        out += "; within the seed spread there"
    held = [epochs_phrase(r.epochs).split()[0] for r in measured if r.verdict == HOLDS]
    return out + (f"; it held at {', '.join(held)} epochs" if held else "")


def _cell(r: Rung) -> str:
    if r.verdict == UNMEASURED:
        return "-"
    spread = f" ± {r.sd:.2f}" if r.n > 1 else ""
    verdict = "holds (collapse monitor)" if r.monitor else r.verdict
    return f"{r.mean:+.2f}{spread} (n={r.n}), {verdict}"


def section(study: Study, by_length: dict[float, Records], chance: float, png: Path | None,
            table_epochs: float | None = None, extra: list[str] | None = None) -> list[str]:
    """The report's "Scale ladder" section: a table claim x length, a sentence per claim, ``extra`` lines,
    the plot."""
    rows = ladder(study, by_length, chance)
    lengths = sorted(by_length)
    wall = sum(float(r.get("wall_seconds", 0.0)) for recs in by_length.values() for rs in recs.values() for r in rs)
    at = f" The tables above are at {epochs_phrase(table_epochs)}." if table_epochs else ""
    lines = ["## Scale ladder", "",
             f"Records at {', '.join(f'{e:g}' for e in lengths)} epochs ({wall / 60:.1f} min of wall time in all).{at} "
             "Each claim's margin against training length: points by which it holds (positive) or fails "
             "(negative), computed per seed on the cells' records of that seed, then mean ± sample std over seeds "
             "(n seeds). *Within noise*: |mean| < std. A collapse claim's margin is chance + 10 minus the cell's "
             "kNN; it also holds when the collapse monitor fired on most seeds. Lengths without a cell's records "
             "show -.", "",
             "| claim | " + " | ".join(epochs_phrase(e) for e in lengths) + " |", "|" + "---|" * (len(lengths) + 1),
             *[f"| {c.text} | " + " | ".join(_cell(r) for r in rs) + " |" for c, rs in rows], ""]
    lines += [f"- {c.text}: {holds_from(rs)}" for c, rs in rows] + [""] + (extra or [])
    if png is not None:
        lines += [f"![{study.title}: margins against length]({png.name})", ""]
    return lines


def plot(study: Study, by_length: dict[float, Records], chance: float, out_png: Path) -> Path:
    """One panel per claim: mean margin against epochs (log x), error bars = seed spread, a zero line; the
    points coloured by verdict (green holds, red does not, grey within noise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ladder(study, by_length, chance)
    lengths = sorted(by_length)
    cols = min(3, max(1, len(rows)))
    nrows = max(1, math.ceil(len(rows) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), dpi=110, squeeze=False)
    for ax in axes.flat[len(rows):]:
        ax.set_visible(False)
    colour = {HOLDS: "tab:green", FAILS: "tab:red", NOISE: "tab:gray"}
    for ax, (claim, rungs) in zip(axes.flat, rows):
        done = [r for r in rungs if r.verdict != UNMEASURED]
        if done:
            ax.errorbar([r.epochs for r in done], [r.mean for r in done], yerr=[r.sd for r in done], fmt="-",
                        color="tab:blue", capsize=3, zorder=1)
            ax.scatter([r.epochs for r in done], [r.mean for r in done], c=[colour[r.verdict] for r in done], zorder=2)
        else:
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center", color="gray")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlim(lengths[0] / 1.3, lengths[-1] * 1.3)
        ax.set_xticks(lengths, [f"{e:g}" for e in lengths])
        ax.minorticks_off()
        ax.set_xlabel("epochs")
        ax.set_ylabel("margin (points)")
        ax.set_title("\n".join(textwrap.wrap(claim.text, 40)), fontsize=8)
    fig.suptitle(f"{study.title}: claim margins against training length", fontsize=10)
    return save_figure(fig, out_png)
