"""byol.eval.context.prepare and byol.eval.encoders: the one set-up behind every eval command."""

import pytest
import torch

from byol.errors import ConfigError
from byol.eval.context import default_out_dir, prepare
from byol.eval.data import DataOptions
from byol.eval.encoders import SourceSpec, load_source
from byol.models import build_backbone


@pytest.mark.parametrize("spec", [SourceSpec(), SourceSpec(checkpoint="x", torchvision="resnet18")])
def test_exactly_one_encoder(spec):
    with pytest.raises(ConfigError, match="exactly one encoder"):
        load_source(spec)


def test_random_init_and_its_scratch_twin_are_seeded_builds_of_one_architecture():
    src = load_source(SourceSpec(random_init=True, backbone="convnet"), seed=2, data_channels=1)

    def build(seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_backbone("convnet", in_channels=1).state_dict()

    enc, scratch = src.encoder.state_dict(), src.make_scratch().state_dict()
    assert all(torch.equal(enc[k], v) for k, v in build(2).items())
    assert all(torch.equal(scratch[k], v) for k, v in build(3).items())  # seed + 1, as documented
    assert not torch.equal(enc["features.0.weight"], scratch["features.0.weight"])
    assert src.ident.endswith(":seed2") and src.in_channels == 1
    assert default_out_dir(src).as_posix() == "runs/baselines/random-init-convnet/eval"


def test_prepare_a_run_with_its_defaults(tiny_run, tmp_path):
    run, folder, _ = tiny_run
    notes = []
    ctx = prepare(SourceSpec(checkpoint=run), log=notes.append)
    assert ctx.out_dir == run / "eval" and ctx.feature_cache_dir == run / "eval" / "features"
    assert ctx.data.carved and len(ctx.data.train) == 96 and len(ctx.data.test) == 24 and ctx.data.num_classes == 3
    assert notes and notes[0].startswith("note: held out 20% of train")
    assert ctx.input_message() is None and ctx.input_message(transfer=True).startswith("transfer: ")
    assert ctx.device.type in ("cpu", "cuda", "mps") and ctx.plan.size == 16
    other = prepare(SourceSpec(checkpoint=run), str(folder), data=DataOptions(test_fraction=0.5), split="train",
                    out_dir=tmp_path, feature_cache=False)
    assert other.data.test is None and len(other.data.train) == 120  # one split, nothing carved
    assert other.out_dir == tmp_path and other.feature_cache_dir is None


@pytest.mark.parametrize("val_name", ["val", "valid", "validation"])
def test_a_folder_without_test_is_evaluated_on_its_val_split(tiny_run, tmp_path, class_folders, val_name):
    run, _, _ = tiny_run
    class_folders(tmp_path / "photos" / "train", n_per_class=8, seed=3)
    class_folders(tmp_path / "photos" / val_name, n_per_class=4, seed=4)
    notes = []
    ctx = prepare(SourceSpec(checkpoint=run), str(tmp_path / "photos"), out_dir=tmp_path / "out", log=notes.append,
                  feature_cache=False)
    assert (len(ctx.data.train), len(ctx.data.test)) == (24, 12) and not ctx.data.carved
    assert ctx.data.test_kind == "val" and ctx.splits()["test_from"] == "the data set's val split"
    assert notes == [f"note: evaluating on the data set's val split: {tmp_path / 'photos'} has no test split"]


def test_a_runs_random_init_baseline_takes_the_runs_inputs(rgb_folder, tiny_run, tmp_path):
    # a run that decoded 20 px RGB images at 16 px, trained on 12 px views with its own mean/std
    from byol.cli.main import main

    run = tmp_path / "run"
    assert main(["pretrain", "--config", "tiny", "--data", str(rgb_folder), "--image-size", "16", "--run-dir",
                 str(run), "--set", "data.view_size=12", "--set", "data.mean=[0.5,0.4,0.3]",
                 "--set", "data.std=[0.2,0.25,0.3]", "--set", "train.epochs=0.5", "--set", "train.knn_every=0",
                 "--set", "train.verdict=false", "--threads", "1"]) == 0
    trained = prepare(SourceSpec(checkpoint=run), feature_cache=False, out_dir=tmp_path / "a")
    baseline = prepare(SourceSpec(random_init=str(run)), feature_cache=False, out_dir=tmp_path / "b")
    assert baseline.data.name == trained.data.name == str(rgb_folder)  # the run's data set by default
    assert baseline.plan == trained.plan and baseline.plan.size == 12  # not the images' 16 px
    assert baseline.plan.mean == (0.5, 0.4, 0.3) and baseline.plan.stats_from == "the source run's"
    assert torch.equal(baseline.images("test"), trained.images("test"))  # decoded at 16 px as in pretraining
    assert baseline.source.in_channels == trained.source.in_channels == 3
    assert baseline.out_dir == tmp_path / "b" and baseline.source.run_dir is None  # never the run's own cards
    # a grayscale run's baseline on RGB images: one input channel (the run's), not the data's three
    gray_run = tiny_run[0]
    ctx = prepare(SourceSpec(random_init=str(gray_run)), str(rgb_folder), feature_cache=False, out_dir=tmp_path / "c")
    twin = prepare(SourceSpec(checkpoint=gray_run), str(rgb_folder), feature_cache=False, out_dir=tmp_path / "d")
    assert ctx.source.in_channels == 1 and ctx.plan == twin.plan and ctx.plan.channel_op == "luma"
