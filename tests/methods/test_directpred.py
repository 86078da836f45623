"""BYOL with DirectPred's predictor (Tian, Chen & Ganguli 2021; ``method.predictor: directpred``): F's moving
average and W's eigen-construction against NumPy, W's spectrum, no trainable parameter, gradients into the
encoder through p = W z, the MLP path unchanged, the config's errors, the global batch over 2 processes, and a
CLI run that resumes exactly."""

import numpy as np
import pytest
import torch

from byol.cli import main
from byol.config import find_preset
from byol.errors import ConfigError
from byol.losses import byol_loss
from byol.methods import BYOL, BYOLConfig
from byol.methods.common import projection_head
from byol.methods.directpred import DirectPredictor
from byol.models import build_backbone
from byol.models.heads import MLP
from byol.optim.optimizers import build_optimizer
from byol.run.checkpoints import read_checkpoint
from byol.train.config import build_config

D = 6


def _backbone():
    return build_backbone("convnet", in_channels=1, widths=[4, 8])


def _method(**kw):
    torch.manual_seed(0)
    return BYOL(_backbone, BYOLConfig(proj_hidden=16, proj_dim=D, pred_hidden=16, target_init="copy", **kw))


def _views(seed=1, n=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 12, 12, generator=g), 3 * torch.randn(n, 1, 12, 12, generator=g) + 2


def _np_weight(f, eps):
    """``U diag(sqrt(s_j) / max_i sqrt(s_i) + eps) U^T`` of ``f = U diag(s) U^T`` (the paper's Eq. 18), float64."""
    s, u = np.linalg.eigh(f.astype(np.float64))
    root = np.sqrt(np.clip(s, 0, None))
    return u @ np.diag(root / root.max() + eps) @ u.T


def _batches(steps, seed=0):
    """Per step, the projections of its micro-batches (two views each; step 2 accumulates two micro-batches)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.2, 2.0, D)  # an anisotropic spectrum, so W is not a multiple of I
    return [[torch.randn(5, D, generator=g) * scale for _ in range(4 if step == 2 else 2)] for step in range(steps)]


def test_f_is_the_moving_average_of_the_global_batch_correlation_and_w_its_eigen_construction():
    rho, eps = 0.3, 0.1
    pred = DirectPredictor(D, rho, eps, every=1)
    assert torch.equal(pred.weight, torch.eye(D))  # before the first estimate: the identity
    f = None
    for zs in _batches(4):
        pred.observe(*zs)
        rows = np.concatenate([z.numpy().astype(np.float64) for z in zs])
        batch = rows.T @ rows / len(rows)  # E[z z^T] over every row of the step (both views, all micro-batches)
        f = batch if f is None else rho * f + (1 - rho) * batch  # the first estimate is the first batch's own
        pred.update()
        np.testing.assert_allclose(pred.corr.numpy(), f, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pred.weight.numpy(), _np_weight(f, eps), rtol=1e-5, atol=1e-6)
    assert int(pred.updates) == 4
    w = pred.weight.double()
    assert torch.equal(w, w.T)  # symmetric to the last bit
    ev = torch.linalg.eigvalsh(w)
    assert float(ev.min()) >= eps - 1e-6 and float(ev.max()) == pytest.approx(1 + eps, abs=1e-6)  # [eps, 1 + eps]
    assert float(ev.min()) < 1.0  # not a multiple of the identity: the small directions are shrunk
    pred.update()  # nothing observed since: nothing changes
    assert int(pred.updates) == 4


def test_w_is_recomputed_every_n_steps_from_the_first():
    pred = DirectPredictor(D, 0.3, 0.1, every=3)
    weights, corrs = [], []
    for zs in _batches(7):
        pred.observe(*zs)
        pred.update()
        weights.append(pred.weight.clone())
        corrs.append(pred.corr.clone())
    for k, w in enumerate(weights):  # recomputed after updates 0, 3, 6 (the reference code's niter % freq == 0)
        source = corrs[k - k % 3]
        np.testing.assert_allclose(w.numpy(), _np_weight(source.numpy(), 0.1), rtol=1e-5, atol=1e-6)
    assert not torch.equal(weights[2], weights[3])


def test_a_collapsed_representation_gives_eps_times_identity():
    pred = DirectPredictor(D, 0.3, 0.25, every=1)
    pred.observe(torch.zeros(4, D), torch.zeros(4, D))
    pred.update()
    assert torch.allclose(pred.weight, 0.25 * torch.eye(D))


def test_the_predictor_has_no_parameter_and_its_state_is_in_the_checkpoint():
    m = _method(predictor="directpred")
    assert list(m.predictor.parameters()) == []
    keys = set(m.state_dict())
    assert {"predictor.corr", "predictor.weight", "predictor.updates"} <= keys
    assert not any(k.startswith("predictor.net") for k in keys)
    opt = build_optimizer("lars", m.trainable_modules(), lr=0.1, weight_decay=1e-6)  # a module without parameters
    optimized = {id(p) for g in opt.param_groups for p in g["params"]}
    assert optimized == {id(p) for mod in (m.encoder, m.projector) for p in mod.parameters()}


def test_predictions_are_w_z_and_gradients_reach_the_encoder_through_them():
    m = _method(predictor="directpred")
    m.train()
    opt = torch.optim.SGD([p for mod in m.trainable_modules() for p in mod.parameters()], lr=0.05)
    for seed in range(3):  # a few steps so W is DirectPred's, not the identity
        opt.zero_grad()
        m(*_views(seed))["loss"].backward()
        opt.step()
        m.after_step(seed, 10)
    w = m.predictor.weight
    assert int(m.predictor.updates) == 3 and not torch.allclose(w, torch.eye(D), atol=1e-3)
    opt.zero_grad()
    v1, v2 = _views(7)
    out = m(v1, v2)
    torch.testing.assert_close(out["pred"], out["proj"] @ w.T)
    out["loss"].backward()
    assert not m.predictor.weight.requires_grad and m.predictor.weight.grad is None
    # the EMA target gets no gradient, so the encoder's comes through p = W z only
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.parameters())
    assert all(p.grad is None for p in m.target_encoder.parameters())
    # and W shapes it: the loss with W replaced by the identity is another one
    with torch.no_grad():
        z1, z2 = m.projector(m.encoder(v1)), m.projector(m.encoder(v2))
        t1, t2 = m.target_projector(m.target_encoder(v1)), m.target_projector(m.target_encoder(v2))
        assert abs(float(byol_loss(z1, t2, z2, t1)) - float(out["loss"])) > 1e-4


def test_the_mlp_predictor_is_unchanged_bit_for_bit():
    """The default (``predictor: mlp``) builds the same modules from the same random draws as before the
    option existed (encoder, projector, MLP predictor, then the target) and predicts with the MLP."""
    m = _method()
    assert m.config.predictor == "mlp" and isinstance(m.predictor, MLP)
    torch.manual_seed(0)
    cfg = BYOLConfig(proj_hidden=16, proj_dim=D, pred_hidden=16, target_init="copy")
    enc = _backbone()
    proj = projection_head(int(enc.feature_dim), cfg)
    pred = MLP(D, 16, D)
    expect = {**{f"encoder.{k}": v for k, v in enc.state_dict().items()},
              **{f"projector.{k}": v for k, v in proj.state_dict().items()},
              **{f"predictor.{k}": v for k, v in pred.state_dict().items()}}
    state = m.state_dict()
    assert {k for k in state if not k.startswith("target_")} == set(expect)
    assert all(torch.equal(state[k], v) for k, v in expect.items())
    m.train()
    v1, _ = _views()
    out = m(*_views())
    assert torch.equal(out["pred"], pred.train()(proj.train()(enc.train()(v1))).detach())
    assert m.after_step(1, 10).keys() == {"tau"}


def test_config_errors_are_one_line():
    cases = [({"predictor": "directpred", "use_predictor": False},
              "method.predictor=directpred needs method.use_predictor=true (false: no predictor at all)"),
             ({"predictor": "direct"}, "method.predictor must be one of mlp, directpred, got 'direct'"),
             ({"directpred_rho": 1.5}, "method.directpred_rho must be in [0, 1], got 1.5"),
             ({"directpred_eps": -0.1}, "method.directpred_eps must be >= 0, got -0.1"),
             ({"directpred_every": 0}, "method.directpred_every must be positive, got 0")]
    for kw, message in cases:
        with pytest.raises(ConfigError) as e:
            BYOLConfig(**kw)
        assert str(e.value).startswith(message)
    with pytest.raises(ConfigError) as e:
        build_config(files=[find_preset("tiny")],
                     overrides=["method.predictor=directpred", "method.use_predictor=false"])
    assert str(e.value) == cases[0][1]
    cfg = build_config(files=[find_preset("tiny")], overrides=["method.predictor=directpred",
                                                                 "method.directpred_every=5"])
    assert (cfg.method.predictor, cfg.method.directpred_rho, cfg.method.directpred_eps,
            cfg.method.directpred_every) == ("directpred", 0.3, 0.1, 5)


def _rank_worker(rank, world, init_file, shards, out_dir):
    import torch.distributed as tdist

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        pred = DirectPredictor(D, 0.3, 0.1, every=1)
        for step in shards:
            pred.observe(*step[rank])
            pred.update()
        torch.save(pred.state_dict(), f"{out_dir}/{rank}.pt")
    finally:
        tdist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_of_unequal_shards_estimate_the_global_batch(tmp_path):
    import torch.multiprocessing as mp

    steps = _batches(3)
    # rank 0 gets 2 rows of each view, rank 1 the other 3: F must weigh every row of the global batch alike
    shards = [[[z[:2] for z in zs], [z[2:] for z in zs]] for zs in steps]
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_rank_worker, args=(2, str(tmp_path / "init"), shards, str(tmp_path)), nprocs=2,
                       start_method=method)
    one = DirectPredictor(D, 0.3, 0.1, every=1)
    for zs in steps:
        one.observe(*zs)
        one.update()
    for rank in range(2):
        state = torch.load(tmp_path / f"{rank}.pt")
        torch.testing.assert_close(state["corr"], one.corr, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(state["weight"], one.weight, rtol=1e-5, atol=1e-6)


def test_cli_run_with_directpred_trains_and_resumes_exactly(image_folder, tmp_path, monkeypatch, resume_checks):
    import byol.train.pretrain as pretrain

    common = ["pretrain", "--config", "tiny", "--data", str(image_folder), "--set", "method.predictor=directpred",
              "--set", "train.epochs=3", "--set", "train.knn_every=0", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    assert main([*common, "--run-dir", str(tmp_path / "full")]) == 0
    full = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    steps = full["state"]["step"]
    predictor = {k: v for k, v in full["method"].items() if k.startswith("predictor.")}
    assert set(predictor) == {"predictor.corr", "predictor.weight", "predictor.updates"}
    assert int(predictor["predictor.updates"]) == steps > 6
    assert not torch.allclose(predictor["predictor.weight"], torch.eye(predictor["predictor.weight"].shape[0]))

    class StopAfter6(pretrain.Trainer):
        def _optimizer_step(self, micro_batches):
            out = super()._optimizer_step(micro_batches)
            if self.state.step == 6:
                self.request_stop()
            return out

    with monkeypatch.context() as mp:
        mp.setattr(pretrain, "Trainer", StopAfter6)
        assert main([*common, "--run-dir", str(tmp_path / "part")]) == 0
    assert read_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["state"]["step"] == 6
    assert main(["pretrain", "--resume", str(tmp_path / "part")]) == 0
    resume_checks.assert_same_training_state(full, read_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt"))
