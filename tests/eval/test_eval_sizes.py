"""A run's sizes are resolved once, stored by the run and read back by evaluation and resume; run
directories written before (the resolved view size in config.yaml, no stored sizes) still evaluate and
resume. ``--image-size`` is the decode size; eval's encoder input size is ``--input-size``."""

import json

import pytest
import torch
import yaml

from byol.cli.main import main
from byol.errors import ConfigError
from byol.eval.context import prepare
from byol.eval.data import DataOptions
from byol.eval.encoders import SourceSpec
from byol.run.checkpoints import read_checkpoint, save_checkpoint


@pytest.fixture
def native_run(rgb_folder, tmp_path):
    """A run on 20 px RGB images at their native size (no data.image_size, no data.view_size)."""
    run = tmp_path / "run"
    assert main(["pretrain", "--config", "tiny", "--data", str(rgb_folder), "--run-dir", str(run),
                 "--set", "train.epochs=0.5", "--set", "train.knn_every=0", "--set", "train.verdict=false",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}", "--threads", "1"]) == 0
    return run


def _pretrain(folder, run, tmp_path, *, stop_at=None):
    """A 2-epoch run (4 steps) at the images' native 20 px; ``stop_at``: stopped there, as Ctrl-C does."""
    from byol.train.loop import Trainer

    step = Trainer._optimizer_step

    def stop(self, micro_batches):
        out = step(self, micro_batches)
        if self.state.step == stop_at:
            self.request_stop()
        return out

    with pytest.MonkeyPatch.context() as m:
        m.setattr(Trainer, "_optimizer_step", stop)
        assert main(["pretrain", "--config", "tiny", "--data", str(folder), "--run-dir", str(run),
                     "--set", "train.epochs=2", "--set", "train.knn_every=0", "--set", "train.verdict=false",
                     "--set", f"data.cache_dir={tmp_path / 'cache'}", "--threads", "1"]) == 0
    return run


def _make_old(run):
    """Rewrite ``run`` as a run written before sizes were stored: the resolved view size in the config."""
    path = run / "checkpoints" / "last.pt"
    ckpt = read_checkpoint(path)
    ckpt.pop("sizes")
    ckpt["config"]["data"]["view_size"] = 20
    save_checkpoint(ckpt, path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["view_size"] = 20
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = json.loads((run / "env.json").read_text())
    env.pop("sizes")
    (run / "env.json").write_text(json.dumps(env))


def _foreign(root, class_folders):
    return class_folders(root / "big", n_per_class=8, size=24, channels=3, seed=5)


def test_the_run_stores_its_sizes_and_keeps_the_config_as_asked(native_run, tmp_path, class_folders):
    config = yaml.safe_load((native_run / "config.yaml").read_text())
    assert config["data"]["view_size"] is None and config["data"]["image_size"] is None
    stored = {"decode": None, "images": 20, "view": 20}
    assert read_checkpoint(native_run / "checkpoints" / "last.pt")["sizes"] == stored
    assert json.loads((native_run / "env.json").read_text())["sizes"] == stored
    # another data set is fed at the run's view size (20 px), read back from the run, not its own 24 px
    for spec in (SourceSpec(checkpoint=native_run), SourceSpec(random_init=str(native_run))):
        ctx = prepare(spec, str(_foreign(tmp_path, class_folders)), feature_cache=False, out_dir=tmp_path / "out")
        assert ctx.plan.size == 20 and ctx.data.decoded_size == 20


def test_a_run_written_before_sizes_were_stored_evaluates_and_resumes_exactly(rgb_folder, tmp_path, class_folders):
    full = _pretrain(rgb_folder, tmp_path / "full", tmp_path)
    run = _pretrain(rgb_folder, tmp_path / "old", tmp_path, stop_at=1)
    _make_old(run)
    for spec in (SourceSpec(checkpoint=run), SourceSpec(random_init=str(run))):
        ctx = prepare(spec, str(_foreign(tmp_path, class_folders)), feature_cache=False, out_dir=tmp_path / "out")
        assert ctx.plan.size == 20
    # `byol pretrain --resume` reads the old config.yaml (view_size 20): nothing to refuse, the same run
    assert main(["pretrain", "--resume", str(run), "--threads", "1"]) == 0
    a, b = (read_checkpoint(r / "checkpoints" / "last.pt") for r in (full, run))
    assert b["config"]["data"]["view_size"] == 20 and b["sizes"] == a["sizes"] and b["state"]["step"] == 4
    assert all(torch.equal(a["method"][k], b["method"][k]) for k in a["method"])


def test_an_old_run_resumes_from_a_config_that_asks_no_view_size_but_not_another_one(rgb_folder, tmp_path):
    from byol.train.config import load_run_config
    from byol.train.pretrain import run_pretrain

    run = _pretrain(rgb_folder, tmp_path / "old", tmp_path, stop_at=1)
    _make_old(run)
    other = load_run_config(run, overrides=["data.view_size=16"])
    with pytest.raises(ConfigError, match="data.view_size"):
        run_pretrain(other, run, resume=True, allow_changes=True)
    asked = load_run_config(run, overrides=["data.view_size=null"])  # e.g. a reproduce cell's config
    assert run_pretrain(asked, run, resume=True)["steps"] == 4


def test_eval_input_size_and_its_old_spelling(native_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["eval", "knn", "--checkpoint", str(native_run), "--input-size", "16", "--out-dir", str(out),
                 "--no-cache", "--threads", "1"]) == 0
    new = capsys.readouterr()
    assert "resized 20 -> 16 px" in new.out and "deprecated" not in new.out + new.err
    assert main(["eval", "knn", "--checkpoint", str(native_run), "--image-size", "16", "--out-dir", str(out),
                 "--no-cache", "--threads", "1"]) == 0
    old = capsys.readouterr()
    assert "resized 20 -> 16 px" in old.out and old.err.count("note: --image-size is deprecated here") == 1
    assert main(["eval", "knn", "--checkpoint", str(native_run), "--input-size", "16", "--image-size", "12"]) == 2
    assert "--input-size 16 and --image-size 12 (its old spelling) differ" in capsys.readouterr().err


def test_the_plan_takes_the_input_size_option(native_run, tmp_path):
    ctx = prepare(SourceSpec(checkpoint=native_run), data=DataOptions(input_size=12), feature_cache=False,
                  out_dir=tmp_path / "o")
    assert ctx.plan.size == 12 and torch.as_tensor(ctx.data.train.images).shape[-1] == 20


def test_a_resume_on_other_sizes_is_refused():
    from byol.data.sizes import Sizes
    from byol.run.resume import check_resume_sizes

    old = {"config": {"data": {"image_size": None, "view_size": 20}}}  # written before sizes were stored
    check_resume_sizes(old, Sizes(decode=None, images=20, view=20))
    with pytest.raises(ConfigError, match="trained on 20 px views"):
        check_resume_sizes(old, Sizes(decode=None, images=24, view=24))  # e.g. the folder's images changed
    new = {"config": {"data": {"image_size": 32, "view_size": None}}, "sizes": {"decode": 32, "images": 32, "view": 32}}
    with pytest.raises(ConfigError, match="trained on 32 px views"):
        check_resume_sizes(new, Sizes(decode=32, images=32, view=24))
