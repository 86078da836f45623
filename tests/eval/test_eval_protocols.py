"""The protocols' registry: ``byol eval <name>`` comes from it, so a protocol defined in one module (here, in
this test) is listed, parsed, set up, run and printed without any other file knowing it."""

import argparse
import json

import pytest
import torch

from byol.cli.main import build_parser, main
from byol.errors import ConfigError
from byol.eval.protocols import PROTOCOLS, Outcome, Protocol, protocol, protocol_names, register


class Centroid(Protocol):
    """A toy protocol: nearest class mean of the raw pixels, with one flag of its own."""

    help = "toy: nearest class mean of the pixels"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--scale", type=float, default=1.0)

    def settings(self, a: argparse.Namespace) -> float:
        if a.scale <= 0:
            raise ConfigError(f"--scale must be positive, got {a.scale}")
        return a.scale

    def run(self, ctx, settings, log=None):
        xtr, ytr = ctx.labeled("train")
        xte, yte = ctx.labeled("test")
        xtr, xte = xtr.flatten(1).float() * settings, xte.flatten(1).float() * settings
        means = [xtr[ytr == c].mean(0) for c in range(ctx.data.num_classes)]
        pred = ((xte[:, None] - torch.stack(means)[None]) ** 2).sum(-1).argmin(1)
        res = {"top1": float((pred == yte).float().mean() * 100)}
        card = ctx.card("centroid", metrics=res, hyperparameters={"scale": settings}, timing={"seconds": 0.0})
        yield Outcome(res, card, ctx.write_card(card))

    def line(self, ctx, settings, out):
        return f"centroid on {ctx.data.name}: top-1 {out.result['top1']:.2f}%; card: {out.path}"


@pytest.fixture
def centroid():
    register("centroid")(Centroid)
    yield PROTOCOLS["centroid"]
    del PROTOCOLS["centroid"]


def test_the_built_in_protocols_are_registered_in_the_help_order():
    assert protocol_names()[:4] == ["linear", "knn", "finetune", "transfer"]


def test_an_unknown_name_is_a_config_error_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown evaluation protocol 'knm' \(did you mean 'knn'\?\); available: "):
        protocol("knm")


def test_a_second_class_under_a_taken_name_is_refused(centroid):
    with pytest.raises(ValueError, match="already registered"):
        register("centroid")(type("Other", (Centroid,), {}))


def test_a_protocol_registered_elsewhere_is_listed_and_run(centroid, tmp_path, class_folders, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--help"])
    assert "centroid" in capsys.readouterr().out and "toy: nearest class mean" in centroid.help
    data = class_folders(tmp_path / "imgs")
    # its own flag is checked before anything loads
    assert main(["eval", "centroid", "--random-init", "--dataset", str(data), "--scale", "0"]) == 2
    assert "--scale must be positive" in capsys.readouterr().err
    out_dir = tmp_path / "out"
    assert main(["eval", "centroid", "--random-init", "--dataset", str(data), "--scale", "2", "--out-dir",
                 str(out_dir), "--no-cache", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # a random init runs twice (initial and recalibrated BN statistics), then names the stronger floor
    assert lines[-1].startswith("fair random-init floor, the stronger variant: top1 ")
    line = [x for x in lines if x.startswith("centroid on ")][0]
    assert line.endswith(".json")
    card = json.loads((out_dir / line.rsplit("card: ", 1)[1].split("/")[-1]).read_text())
    assert card["protocol"] == "centroid" and card["hyperparameters"] == {"scale": 2.0}
    assert card["metrics"]["top1"] > 50  # the toy classes are easy (chance: 33%)
