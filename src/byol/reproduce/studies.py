"""The paper's comparisons and ablations as data: which cells a study trains, the paper's number for each,
and the claims the paper makes about them (checked against our numbers, never forced).

Paper numbers are ImageNet linear top-1 (%) of a ResNet-50 [Grill et al. 2020]: Table 1 (BYOL 1000
epochs against SimCLR and MoCo v2 as published), and at 300 epochs, batch 4096: Table 16 (batch size),
Table 17 (augmentations), Table 5a (tau), Tables 5b / 19 (predictor, target, negatives). Ours are CPU-scale
runs (see each report's "scale" line), so only directions can be compared, not values.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from dataclasses import dataclass, field

#: Overrides that remove view operations (both views), as in the paper's Table 17 rows.
NO_COLOUR = ("views.both.jitter_p=0.0", "views.both.gray_p=0.0")
CROP_ONLY = (*NO_COLOUR, "views.both.blur_p=0.0", "views.both.solarize_p=0.0")


@dataclass(frozen=True)
class Cell:
    """One configuration of a study (trained once per seed)."""

    key: str  #: unique within the study
    label: str  #: row label
    method: str  #: byol | simclr | moco | random-init (no training: the random-init floor)
    overrides: tuple[str, ...] = ()  #: ``--set`` overrides on top of the preset (method.name is added)
    paper: float | None = None  #: the paper's ImageNet linear top-1 for this cell, when it reports one
    group: str = ""  #: series in tables and plots (default: the method)
    x: float | str | None = None  #: position on the plot's x axis (e.g. the batch size)
    reference: bool = False  #: the cell of its group that drops are measured from
    #: the method's own preset (e.g. ``moco-cifar10``): its ``method`` and ``optim`` sections (and ``views`` with
    #: ``recipe_views``) replace the scale preset's, the scale's batch kept (:func:`byol.reproduce.recipes`).
    #: None: the scale preset's sections (the cell's hash is then what it was before recipes existed)
    recipe: str | None = None
    recipe_views: bool = False  #: also take the recipe's views (the method's paper prescribes its own)
    epochs_scale: float = 1.0  #: this cell trains ``Scale.epochs`` x this (equal steps over a batch ladder)
    budget: str | None = None  #: a wall-clock budget instead of the scale's length (equal wall time cells)

    @property
    def series(self) -> str:
        return self.group or self.method

    def all_overrides(self) -> tuple[str, ...]:
        if self.method == "random-init":
            return self.overrides
        return (f"method.name={self.method}", *self.overrides)


Results = dict[str, dict[str, float]]  #: cell key -> {"knn": mean, "linear": mean, "collapsed": share, ...}
#: (results, chance %) -> the claim's signed margin in points (positive: it holds), None: cannot tell
Margin = Callable[[Results, float], "float | None"]


@dataclass(frozen=True)
class Measure:
    """How a claim is measured: a signed margin in points, so that a claim can be followed against training
    length (:mod:`byol.reproduce.ladder`), not only checked. The claim holds when the margin is positive (zero
    too for an ``at_least`` claim, "A >= B"), or when ``also`` says so (a sign that has no margin in points:
    the collapse monitor)."""

    margin: Margin
    at_least: bool = False
    also: Callable[[Results], bool] | None = None  #: read on the means over seeds

    def holds(self, margin: float | None, res: Results | None = None) -> bool | None:
        if margin is None:
            return None
        return (margin >= 0 if self.at_least else margin > 0) or bool(self.also and res and self.also(res))


@dataclass(frozen=True)
class Claim:
    text: str
    measure: Measure
    row: str = ""  #: with ``column``: the claim's cell in a compact table of verdicts (when every claim has both)
    column: str = ""
    cells: tuple[str, ...] = ()  #: the cell keys it compares, when known: dropped with a cell this version lacks

    def margin(self, res: Results, chance: float) -> float | None:
        return self.measure.margin(res, chance)

    def check(self, res: Results, chance: float) -> bool | None:
        """Holds? (None: cannot tell) on ``res``, the means over seeds of a study's cells."""
        return self.measure.holds(self.margin(res, chance), res)


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    paper_source: str
    cells: tuple[Cell, ...]
    claims: tuple[Claim, ...] = ()
    plot: str = "bars"  #: bars | drops-by-x (line of drop against x, e.g. batch size) | drops (bars of drops)
    metric_note: str = ""
    extra: dict = field(default_factory=dict)
    file: str = ""  #: the report's file stem when it differs from the name (a variant of a study beside it)

    @property
    def stem(self) -> str:
        return self.file or self.name


def _gt(a: str, b: str, metric: str = "knn", at_least: bool = False) -> Measure:
    """A beats B: r[a] - r[b] in points."""
    return Measure(lambda r, chance: (r[a][metric] - r[b][metric]) if a in r and b in r else None, at_least)


def _ge(a: str, b: str, metric: str = "knn") -> Measure:
    return _gt(a, b, metric, at_least=True)


def _collapsed(a: str) -> Measure:
    """Collapse: kNN within 10 points of chance (margin: chance + 10 - kNN), or the monitor fired on most seeds."""
    return Measure(lambda r, chance: (chance + 10.0 - r[a]["knn"]) if a in r else None,
                   also=lambda r: a in r and r[a]["collapsed"] > 0.5)


def _loses_less(a_small: str, a_ref: str, b_small: str, b_ref: str, metric: str = "linear") -> Measure:
    """A's drop is smaller than B's: B's drop minus A's, in points."""
    def margin(r: Results, chance: float) -> float | None:
        if not all(k in r for k in (a_small, a_ref, b_small, b_ref)):
            return None
        return (r[b_ref][metric] - r[b_small][metric]) - (r[a_ref][metric] - r[a_small][metric])

    return Measure(margin)


def _beats_all(a: str, others: tuple[str, ...], metric: str = "knn") -> Measure:
    """A beats each of ``others`` that was measured: the smallest of the differences."""
    def margin(r: Results, chance: float) -> float | None:
        diffs = [r[a][metric] - r[k][metric] for k in others if k in r and a in r]
        return min(diffs) if diffs else None

    return Measure(margin)


#: The baselines: the paper's number is ImageNet linear top-1 of a ResNet-50 as published: BYOL, SimCLR and
#: MoCo v2 as in BYOL's Table 1; SimSiam 800 epochs (SimSiam paper, Table 4); Barlow Twins (its Table 1); SwAV
#: 75.3 is the SwAV paper's ResNet-50 with multi-crop (2 x 224 + 6 x 96), while this cell trains on the two
#: views of the scale (its recipe's optimizer and loss, not its preset's small crops), hence its label. Each method but BYOL runs its own preset's method and optimizer
#: sections (``recipe``; BYOL's recipe is the scale preset itself); MoCo v2 also its views (one distribution
#: for both, MoCo v2's aug+). SwAV's cell is skipped where the method or its preset is not registered.
BASELINES = (
    Cell("byol", "BYOL", "byol", paper=74.3),
    Cell("simclr", "SimCLR", "simclr", paper=69.3, recipe="simclr-cifar10"),
    Cell("moco", "MoCo v2", "moco", paper=71.1, recipe="moco-cifar10", recipe_views=True),
    Cell("simsiam", "SimSiam", "simsiam", paper=71.3, recipe="simsiam-cifar10"),
    Cell("barlowtwins", "Barlow Twins", "barlowtwins", paper=73.2, recipe="barlowtwins-cifar10"),
    Cell("swav", "SwAV (2 views; paper: multi-crop)", "swav", paper=75.3, recipe="swav-cifar10"),
)


def _beats_each(others: tuple[Cell, ...], suffix: str, column: str) -> list[Claim]:
    """BYOL >= each of ``others`` by linear and kNN, comparing ``byol`` with each ``<key><suffix>``."""
    return [Claim(f"BYOL >= {c.label} ({name}, {column})", _ge("byol", c.key + suffix, metric),
                  row=f"BYOL >= {c.label}", column=f"{name}, {column}", cells=("byol", c.key))
            for c in others for metric, name in (("linear", "linear"), ("knn", "kNN"))]


def baselines(equal_time: bool = False) -> Study:
    """BYOL against the other methods at equal steps (and, with ``equal_time``, at BYOL's wall time)."""
    others = BASELINES[1:]
    claims = _beats_each(others, "", "equal steps")
    if equal_time:
        claims += _beats_each(others, "@time", "equal wall time")
    return Study("baselines", "BYOL against SimCLR, MoCo v2, SimSiam, Barlow Twins and SwAV",
                 "Table 1 (ImageNet linear, ResNet-50; BYOL 1000 epochs, SimCLR and MoCo v2 as published), beside "
                 "SimSiam's Table 4, Barlow Twins' Table 1 and SwAV's published numbers", BASELINES, tuple(claims),
                 extra={"equal_time": equal_time})


#: The paper's Table 16 (ImageNet linear top-1, 300 epochs) by batch size.
PAPER_BATCH = {"byol": {4096: 72.5, 2048: 72.4, 1024: 72.2, 512: 72.2, 256: 71.8, 128: 69.6, 64: 59.7},
               "simclr": {4096: 67.9, 2048: 67.8, 1024: 67.4, 512: 66.5, 256: 64.3, 128: 63.6, 64: 59.2}}


def _at_equal_steps(cells: tuple[Cell, ...]) -> tuple[Cell, ...]:
    """The batch ladder at equal steps: each cell trains the scale's epochs x batch / reference batch (the
    reference's steps, up to the rounding of an epoch's last incomplete batch)."""
    refs = {c.series: float(c.x) for c in cells if c.reference}
    return tuple(dataclasses.replace(c, epochs_scale=float(c.x) / refs[c.series]) for c in cells)


def batch_size(ladder: tuple[int, ...], equal_steps: bool = False) -> Study:
    """BYOL and SimCLR over a batch ladder (largest first); the paper's column is the same position of its
    own ladder counted from 4096 by the same ratios. Equal epochs (the paper's comparison: a smaller batch
    takes more steps), or with ``equal_steps`` each cell's epochs x batch / the largest batch."""
    ladder = tuple(sorted(ladder, reverse=True))
    cells = []
    for method in ("byol", "simclr"):
        for b in ladder:
            paper_b = 4096 * b // ladder[0]
            cells.append(Cell(f"{method}-b{b}", f"{'BYOL' if method == 'byol' else 'SimCLR'}, batch {b}", method,
                              (f"optim.batch_size={b}",), PAPER_BATCH[method].get(paper_b), x=b,
                              reference=b == ladder[0]))
    small = ladder[-1]
    claims = (Claim(f"BYOL loses less than SimCLR from batch {ladder[0]} to {small} (linear)",
                    _loses_less(f"byol-b{small}", f"byol-b{ladder[0]}", f"simclr-b{small}", f"simclr-b{ladder[0]}")),
              Claim(f"BYOL loses less than SimCLR from batch {ladder[0]} to {small} (kNN)",
                    _loses_less(f"byol-b{small}", f"byol-b{ladder[0]}", f"simclr-b{small}", f"simclr-b{ladder[0]}",
                                "knn")))
    note = "lr follows the linear scaling rule (base_lr x batch / 256); " + (
        "equal steps: each cell trains the epochs x batch / the largest batch" if equal_steps else
        "equal epochs: a smaller batch takes more steps (the paper's comparison; --equal-steps for equal steps)")
    if equal_steps:  # its own report beside the equal-epochs one (batch-size-equal-steps.md): both are kept
        return Study("batch-size", "Batch size at equal steps: drop from the largest batch",
                     "Table 16 / Figure 3a (300 epochs, equal epochs there)", _at_equal_steps(tuple(cells)), claims,
                     plot="drops-by-x", metric_note=note, file="batch-size-equal-steps")
    return Study("batch-size", "Batch size: drop from the largest batch", "Table 16 / Figure 3a (300 epochs)",
                 tuple(cells), claims, plot="drops-by-x", metric_note=note)


def augmentations() -> Study:
    paper = {"byol": (72.5, 63.4, 59.4), "simclr": (67.9, 45.7, 40.3)}
    cells = []
    for method, name in (("byol", "BYOL"), ("simclr", "SimCLR")):
        full, nocol, crop = paper[method]
        cells += [Cell(f"{method}-full", f"{name}, full views", method, (), full, x="full", reference=True),
                  Cell(f"{method}-no-colour", f"{name}, no colour (no jitter, no grayscale)", method, NO_COLOUR,
                       nocol, x="no colour"),
                  Cell(f"{method}-crop-only", f"{name}, crop + flip only", method, CROP_ONLY, crop, x="crop + flip")]
    claims = (Claim("BYOL loses less than SimCLR without colour (linear)",
                    _loses_less("byol-no-colour", "byol-full", "simclr-no-colour", "simclr-full")),
              Claim("BYOL loses less than SimCLR with crop + flip only (linear)",
                    _loses_less("byol-crop-only", "byol-full", "simclr-crop-only", "simclr-full")),
              Claim("BYOL loses less than SimCLR without colour (kNN)",
                    _loses_less("byol-no-colour", "byol-full", "simclr-no-colour", "simclr-full", "knn")))
    return Study("augmentations", "Augmentations: drop from the full views", "Table 17 / Figure 3b (300 epochs)",
                 tuple(cells), claims, plot="drops")


def tau(preset_tau: float) -> Study:
    const = ("method.tau_schedule=constant",)
    cells = (
        Cell("tau-0", "constant tau 0", "byol", (*const, "method.tau_base=0.0"), 0.3, x="0"),
        Cell("tau-0.9", "constant tau 0.9", "byol", (*const, "method.tau_base=0.9"), 68.4, x="0.9"),
        Cell("tau-0.99", "constant tau 0.99", "byol", (*const, "method.tau_base=0.99"), 72.5, x="0.99"),
        Cell("tau-cosine", f"cosine from tau {preset_tau:g} (the preset)", "byol", (), None, x="cosine"),
        Cell("tau-1", "tau 1 (fixed random target)", "byol", (*const, "method.tau_base=1.0",
                                                             "method.target_init=random"), 18.8, x="1"),
        Cell("random-init", "random init (no training)", "random-init", (), 1.4, x="random"),
    )
    claims = (Claim("tau = 0 collapses", _collapsed("tau-0")),
              Claim("tau = 1 (fixed random target) beats random init (kNN)", _gt("tau-1", "random-init")),
              Claim("tau = 1 loses clearly to the EMA target (cosine, kNN)", _gt("tau-cosine", "tau-1")),
              Claim("constant 0.99 beats constant 0.9 (kNN)", _gt("tau-0.99", "tau-0.9")))
    return Study("tau", "Target decay rate tau", "Table 5a (300 epochs; random init scores 1.4)", cells, claims)


def components() -> Study:
    const0 = ("method.tau_schedule=constant", "method.tau_base=0.0")
    cells = (
        Cell("byol", "BYOL (predictor, EMA target)", "byol", (), 72.5),
        Cell("no-predictor", "no predictor", "byol", ("method.use_predictor=false",), 0.2),
        Cell("no-target", "no target network (tau 0)", "byol", const0, 5.5),
        Cell("neither", "no predictor, no target network", "byol", ("method.use_predictor=false", *const0), None),
        Cell("negatives", "BYOL + negatives (beta 1)", "byol", ("method.negative_weight=1.0",), 70.9),
    )
    claims = (Claim("no predictor collapses", _collapsed("no-predictor")),
              Claim("no target network (tau 0) collapses", _collapsed("no-target")),
              Claim("BYOL beats the collapsed variants (kNN)",
                    _beats_all("byol", ("no-predictor", "no-target", "neither"))),
              Claim("adding negatives does not help BYOL (linear)", _ge("byol", "negatives", "linear")))
    return Study("components", "Predictor, target network and negatives", "Tables 5b and 19 (300 epochs)", cells,
                 claims)


STUDY_NAMES = ("baselines", "batch-size", "augmentations", "tau", "components")


def get_study(name: str, *, batch_ladder: tuple[int, ...], preset_tau: float, equal_time: bool = False,
              equal_steps: bool = False) -> Study:
    from byol.errors import ConfigError

    builders: dict[str, Callable[[], Study]] = {
        "baselines": lambda: baselines(equal_time), "batch-size": lambda: batch_size(batch_ladder, equal_steps),
        "augmentations": augmentations,
        "tau": lambda: tau(preset_tau), "components": components,
    }
    if name not in builders:
        raise ConfigError(f"unknown study {name!r}; choose one of {', '.join(STUDY_NAMES)} (or all)")
    return builders[name]()
