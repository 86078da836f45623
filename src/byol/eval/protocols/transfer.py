"""``byol eval transfer --to DATASET``: an encoder evaluated on another data set with the L-BFGS linear
protocol (``--mode linear``, the paper's transfer protocol, App. D.2) or by fine-tuning (``--mode finetune``,
by default on 100% of the target's train for 2000 steps); the cards' protocols are ``transfer-linear`` and
``transfer-finetune``."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from byol.errors import ConfigError
from byol.eval.protocols.finetune import (
    FINETUNE_ONLY,
    FinetuneOptions,
    add_finetune_arguments,
    finetune_line,
    finetune_options,
    run_options,
)
from byol.eval.protocols.linear import add_l2_grid_argument, linear_line, run_linear
from byol.eval.protocols.registry import Log, Outcome, Protocol, given_flags, register

if TYPE_CHECKING:
    from byol.eval.context import EvalContext

__all__ = ["TransferProtocol", "TransferSettings"]


@dataclass(frozen=True)
class TransferSettings:
    l2_grid: str = "default"  #: ``--mode linear``
    finetune: FinetuneOptions | None = None  #: ``--mode finetune``


@register("transfer")
class TransferProtocol(Protocol):
    help = "evaluate on another data set: linear or fine-tune"
    transfer = True
    dataset_flag = False

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--to", required=True, dest="dataset", metavar="DATASET", help="target data set or folder")
        p.add_argument("--mode", choices=("linear", "finetune"), default="linear")
        add_l2_grid_argument(p, "--mode linear")
        add_finetune_arguments(p, labels_default=["100%"], steps_default=2000)

    def settings(self, a: argparse.Namespace) -> TransferSettings:
        if a.mode == "linear":
            given = given_flags(a, FINETUNE_ONLY)
            if given:
                raise ConfigError(f"{', '.join(given)} only apply to `--mode finetune` (this is --mode linear)")
            return TransferSettings(l2_grid=a.l2_grid or "default")
        if a.l2_grid is not None:
            raise ConfigError("--l2-grid only applies to `--mode linear`; --mode finetune chooses among --lrs")
        return TransferSettings(finetune=finetune_options(a, "transfer-finetune"))

    def trains_encoder(self, settings: TransferSettings) -> bool:
        return settings.finetune is not None

    def run(self, ctx: EvalContext, settings: TransferSettings, log: Log = None) -> Iterable[Outcome]:
        if settings.finetune is not None:
            return run_options(ctx, settings.finetune, log)
        return [run_linear(ctx, protocol="transfer-linear", l2_grid=settings.l2_grid)]

    def line(self, ctx: EvalContext, settings: TransferSettings, out: Outcome) -> str:
        if settings.finetune is not None:
            return finetune_line(ctx, out)
        return linear_line("transfer-linear", ctx, out.result, out.path)
