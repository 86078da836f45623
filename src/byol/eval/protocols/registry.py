"""Evaluation protocols by name, as methods have theirs (:mod:`byol.methods.registry`): ``byol eval <name>``
knows a protocol only through this registry, so a new protocol is one module (its settings, its run on a
prepared :class:`~byol.eval.context.EvalContext`, its flags) that calls :func:`register`.

A protocol is a :class:`Protocol` subclass. The command line drives it in three steps: :meth:`Protocol.settings`
turns the parsed flags into validated settings *before* anything is loaded (a mistyped flag costs no
encoder load), the CLI prepares the context once (the flags every protocol shares: encoder, data, device,
output), then :meth:`Protocol.run` yields one :class:`Outcome` per card it wrote and :meth:`Protocol.line`
is what ``byol eval`` prints for each. Nothing here imports torch: ``byol --help`` lists the protocols fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from byol.config.checks import did_you_mean
from byol.errors import ConfigError

if TYPE_CHECKING:
    from byol.eval.context import EvalContext

__all__ = ["Log", "Outcome", "PROTOCOLS", "Protocol", "given_flags", "protocol", "protocol_names", "register",
           "top_metrics"]

Log = Callable[[str], None] | None


@dataclass
class Outcome:
    """What one protocol run measured: the protocol function's result, its card and the card's path."""

    result: dict[str, Any]  #: e.g. ``{"top1", "top5"?, "l2", ...}``; kNN: ``{"k20": .., "k200": ..}``
    card: dict[str, Any]
    path: Path


class Protocol:
    """One ``byol eval`` subcommand. Subclasses set :attr:`help` and implement :meth:`run` and :meth:`line`;
    :meth:`add_arguments` and :meth:`settings` are its command-line entry (by default: no flags of its own)."""

    name: str = ""  #: set by :func:`register`
    help: str = ""  #: the one line of ``byol eval --help``
    transfer: bool = False  #: announce the input adaptation even when it changes nothing (another data set)
    dataset_flag: bool = True  #: take the shared ``--dataset`` (False: :meth:`add_arguments` sets ``dataset``)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The protocol's own flags, after the shared ones."""

    def settings(self, args: argparse.Namespace) -> Any:
        """The parsed flags as the protocol's settings, checked (``ConfigError``) before anything is loaded."""
        return args

    def trains_encoder(self, settings: Any) -> bool:
        """Whether this run updates the encoder's weights (then an encoder without weights is refused)."""
        return False

    def run(self, ctx: EvalContext, settings: Any, log: Log = None) -> Iterable[Outcome]:
        """Fit and score on ``ctx``, write one card per outcome, yield the outcomes in order."""
        raise NotImplementedError

    def line(self, ctx: EvalContext, settings: Any, out: Outcome) -> str:
        """What ``byol eval`` prints for ``out``."""
        raise NotImplementedError


PROTOCOLS: dict[str, Protocol] = {}


def register(name: str) -> Callable[[type[Protocol]], type[Protocol]]:
    """Class decorator: make a :class:`Protocol` available as ``byol eval <name>``."""

    def add(cls: type[Protocol]) -> type[Protocol]:
        if name in PROTOCOLS and type(PROTOCOLS[name]) is not cls:
            raise ValueError(f"evaluation protocol {name!r} is already registered ({type(PROTOCOLS[name]).__name__})")
        cls.name = name
        PROTOCOLS[name] = cls()
        return cls

    return add


def protocol_names() -> list[str]:
    """The registered names, in registration order (the order of ``byol eval --help``)."""
    return list(PROTOCOLS)


def protocol(name: str) -> Protocol:
    """The protocol registered as ``name`` (ConfigError naming the available ones)."""
    found = PROTOCOLS.get(name)
    if found is None:
        raise ConfigError(f"unknown evaluation protocol {name!r}{did_you_mean(name, protocol_names())}; "
                          f"available: {', '.join(protocol_names())}")
    return found


def given_flags(args: argparse.Namespace, flags: tuple[tuple[str, str], ...]) -> list[str]:
    """The ``flags`` (attribute, flag) the user gave: their value is not the None / False of "not given"."""
    return [flag for attr, flag in flags if getattr(args, attr, None) not in (None, False)]


def top_metrics(res: dict[str, Any]) -> dict[str, float]:
    """The card's ``metrics`` of a classifier: top-1 (and top-5 when measured)."""
    return {k: res[k] for k in ("top1", "top5") if k in res}


def top5_text(res: dict[str, Any]) -> str:
    return f", top-5 {res['top5']:.2f}%" if "top5" in res else ""


def sizes_text(ctx: EvalContext) -> str:
    return f"{len(ctx.data.train)} train / {len(ctx.data.test)} test"
