"""benchmarks/parity.py: lightly's pieces as byol methods, given our section's values, run and scored as our
own methods are, one line per (impl, method, seed) skipped on a re-run. The tests that build lightly's pieces
skip without lightly (it lives in .venv-peers, benchmarks/setup_peers.sh, never in the package's venv)."""

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from byol.errors import ConfigError
from byol.losses import byol_loss, nt_xent
from byol.methods.registry import CONFIGS, METHODS, build_method
from byol.reproduce.runner import Scale, cell_config
from byol.train.config import build_config

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "parity.py"


@pytest.fixture(scope="module")
def parity():
    """The script, loaded once (it registers two methods), and the registry as it was afterwards."""
    before = dict(METHODS), dict(CONFIGS)
    spec = importlib.util.spec_from_file_location("parity", SCRIPT)
    mod = sys.modules["parity"] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    yield mod
    del sys.modules["parity"]
    for registry, saved in zip((METHODS, CONFIGS), before):
        registry.clear()
        registry.update(saved)


def _split_folder(root: Path, images, labels) -> Path:
    """``train/`` and ``test/`` class folders: every third image is a test image."""
    for i, (img, y) in enumerate(zip(images, labels)):
        d = root / ("test" if i % 3 == 0 else "train") / f"class{int(y)}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(d / f"{i:03d}.png")
    return root


def test_lightly_cells_get_our_sections_values(parity):
    """The folder preset's method keys are written for ``byol``, so a ``lightly-byol`` run would drop them (and
    train with the section's defaults) unless they are passed on: the lightly cell resolves to ours' values."""
    scale = Scale(preset="folder", data="fashion-mnist", budget=None, epochs=1.0)
    ours = cell_config(parity.cell("ours", "byol", scale, 0), scale, 0).method
    theirs = cell_config(parity.cell("lightly", "byol", scale, 0), scale, 0).method
    assert theirs.name == "lightly-byol" and ours.tau_base == 0.996 and ours.pred_hidden == 1024
    assert {k: getattr(theirs, k) for k in ("proj_hidden", "proj_dim", "pred_hidden", "tau_base")} == {
        "proj_hidden": 1024, "proj_dim": 128, "pred_hidden": 1024, "tau_base": 0.996}
    bare = build_config(files=[parity.find_preset("folder")], overrides=["method.name=lightly-byol"]).method
    assert bare.pred_hidden == 4096  # the preset's 1024 dropped: what the mirroring is for
    simclr = cell_config(parity.cell("lightly", "simclr", scale, 0), scale, 0).method
    assert simclr.name == "lightly-simclr" and simclr.temperature == 0.5 and simclr.proj_hidden == 1024
    with pytest.raises(ConfigError, match="target_init"):  # lightly copies the online network into its target
        parity.mirrored(build_config(overrides=["method.target_init=random"]).method, parity.LightlyBYOLConfig)


def test_compare_pools_the_seeds_spread(parity):
    c = parity.compare([1.0, 3.0], [2.0, 2.5])
    s = math.sqrt((2.0 + 0.125) / 2)  # sample variances 2 and 0.125
    assert c["ours"] == 2.0 and c["theirs"] == 2.25 and c["range"] == (2.0, 2.5)
    assert c["gap"] == -0.25 and c["s"] == pytest.approx(s) and c["within"] is True
    assert parity.compare([10.0, 10.2], [8.0, 8.2])["within"] is False  # 2 points apart, spread 0.14
    assert parity.compare([10.0], [8.0])["within"] is None  # one seed: no spread to judge by


def _run(parity, data: Path, tmp_path: Path, impls: list[str], capsys, table_has: str) -> list[dict]:
    out = tmp_path / "parity.jsonl"
    args = ["--data", str(data), "--config", "tiny", "--epochs", "1", "--seeds", "0", "--impls", *impls,
            "--out", str(out), "--runs-dir", str(tmp_path / "runs"), "--eval-train", "0",
            "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    assert parity.main(args) == 0
    first = capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert parity.main(args) == 0  # a re-run trains nothing and appends nothing
    assert capsys.readouterr().out.count("skipped") == len(rows) == len(out.read_text().splitlines())
    assert table_has in first
    return rows


def test_runs_are_recorded_once_and_scored_on_test(parity, labeled_images, tmp_path, capsys):
    data = _split_folder(tmp_path / "data", *labeled_images)
    rows = _run(parity, data, tmp_path, ["ours"], capsys, "ours: 1 seeds, lightly: 0 seeds (waiting)")
    assert [(r["impl"], r["method"], r["registered"]) for r in rows] == [("ours", "byol", "byol"),
                                                                         ("ours", "simclr", "simclr")]
    for r in rows:  # one tiny-preset epoch of 80 train images at batch 16; 40 test images, 3 classes
        assert r["steps"] == 5 and 0 <= r["knn"] <= 100 and 0 <= r["linear"] <= 100
        assert r["scale"]["overrides"] == [f"data.cache_dir={tmp_path / 'cache'}"]  # threads/progress left out
    assert rows[1]["provenance"]["config"]["method"]["temperature"] == 0.5


# ------------------------------------------------------------------------------------- with lightly
def _backbone():
    from byol.config import ModelConfig
    from byol.models.factory import build_encoder

    return build_encoder(ModelConfig(backbone="convnet", options={"widths": [4, 8]}), 1)


def test_lightly_byol_loss_is_ours_and_its_target_follows_lightlys_tau(parity):
    pytest.importorskip("lightly")
    torch.manual_seed(0)
    m = build_method(parity.LightlyBYOLConfig(proj_hidden=32, proj_dim=16, pred_hidden=32, tau_base=0.9), _backbone)
    v1, v2 = torch.rand(8, 1, 16, 16), torch.rand(8, 1, 16, 16)
    out = m(v1, v2)
    p1, p2 = (m.predictor(m.projector(m.encoder(v))) for v in (v1, v2))
    t1, t2 = (m.target_projector(m.target_encoder(v)) for v in (v1, v2))
    assert float(out["loss"].detach()) == pytest.approx(float(byol_loss(p1, t2, p2, t1).detach()), abs=1e-5)
    assert not any(p.requires_grad for p in m.target_encoder.parameters())
    before = [p.clone() for p in m.target_projector.parameters()]
    with torch.no_grad():
        for p in m.projector.parameters():
            p.add_(1.0)
    tau = m.after_step(5, 11)["tau"]  # lightly's cosine over K - 1 = 10 steps: halfway
    assert tau == pytest.approx(1 - 0.1 * 0.5)
    for t, b, o in zip(m.target_projector.parameters(), before, m.projector.parameters()):
        assert torch.allclose(t, tau * b + (1 - tau) * o, atol=1e-6)


def test_lightly_simclr_loss_is_nt_xent_of_its_projections(parity):
    pytest.importorskip("lightly")
    torch.manual_seed(0)
    m = build_method(parity.LightlySimCLRConfig(proj_hidden=32, proj_dim=16, temperature=0.5), _backbone)
    v1, v2 = torch.rand(8, 1, 16, 16), torch.rand(8, 1, 16, 16)
    out = m(v1, v2)
    z1, z2 = m.projector(m.encoder(torch.cat([v1, v2]))).chunk(2)
    assert float(out["loss"].detach()) == pytest.approx(float(nt_xent(z1, z2, 0.5).detach()), abs=1e-5)
    assert isinstance(list(m.projector.modules())[-1], torch.nn.BatchNorm1d)  # lightly's head ends with BN


def test_both_implementations_run_side_by_side(parity, labeled_images, tmp_path, capsys):
    pytest.importorskip("lightly")
    data = _split_folder(tmp_path / "data", *labeled_images)
    rows = _run(parity, data, tmp_path, ["ours", "lightly"], capsys, "| byol | knn | ")
    assert [(r["impl"], r["registered"]) for r in rows] == [("ours", "byol"), ("lightly", "lightly-byol"),
                                                            ("ours", "simclr"), ("lightly", "lightly-simclr")]
    assert len({r["steps"] for r in rows}) == 1  # equal steps


def test_check_pieces_finds_the_losses_and_updates_equal_and_the_heads_not(parity, capsys):
    pytest.importorskip("lightly")
    assert parity.main(["--check-pieces"]) == 0
    lines = capsys.readouterr().out.splitlines()
    gaps = {" ".join(line.split()[:2]): [float(x) for x in re.findall(r"gap\|? ([0-9.e+-]+)", line)] for line in lines}
    assert len(gaps["NT-Xent (T=0.5,"]) == len(gaps["BYOL loss"]) == 2  # the value's and the gradients'
    assert max(gaps["NT-Xent (T=0.5,"]) < 1e-5 and max(gaps["BYOL loss"]) < 1e-5 and gaps["BYOL projector"][0] < 1e-5
    assert gaps["momentum update"][0] < 1e-5 and gaps["encoder at"] == [0.0]
    assert "its gradient is 0.2500 x ours" in "\n".join(lines)  # lightly's examples' 0.5 (neg + neg)
    simclr = next(line for line in lines if line.startswith("SimCLR projector"))
    assert "Linear BN ReLU Linear BN" in simclr and float(re.search(r"output gap\| ([0-9.e+-]+)", simclr)[1]) > 0.1
