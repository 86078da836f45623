import json
import sys

import pytest
import torch
from torch import nn

from byol.cli.main import main
from byol.errors import ByolError
from byol.models.export import backbone_meta, export_onnx, save_safetensors, save_torchvision
from byol.models import torchvision_resnet
from byol.models import build_backbone


def _meta(enc, name, **kw):
    return backbone_meta(enc, backbone=name, in_channels=kw.pop("in_channels", 3), mean=[0.5] * 3, std=[0.25] * 3,
                         view_size=32, **kw)


def _trained_like(enc):
    """Non-trivial BN statistics and weights, so that a wrong mapping cannot give equal outputs."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return enc.eval()


def test_torchvision_resnet18_loads_strict_and_matches(tmp_path):
    import torchvision

    torch.manual_seed(0)
    enc = _trained_like(build_backbone("resnet18"))
    path, side = save_torchvision(enc, tmp_path / "enc.pt", _meta(enc, "resnet18"))
    tv = torchvision.models.resnet18()
    tv.fc = nn.Identity()
    tv.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(tv.eval()(x), enc(x))
    meta = json.loads(side.read_text())
    assert meta["format"] == "torchvision" and meta["torchvision_loadable"] and meta["feature_dim"] == 512


def test_small_stem_grayscale_resnet_into_matching_torchvision_model(tmp_path):
    torch.manual_seed(0)
    enc = _trained_like(build_backbone("resnet18", small_stem=True, in_channels=1, width=1.0))
    path, _ = save_torchvision(enc, tmp_path / "enc.pt", _meta(enc, "resnet18", small_stem=True, in_channels=1))
    tv = torchvision_resnet("resnet18", small_stem=True, in_channels=1)
    tv.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert tv.conv1.kernel_size == (3, 3) and tv.conv1.stride == (1, 1) and isinstance(tv.maxpool, nn.Identity)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(tv.eval()(x), enc(x))


def test_safetensors_round_trip(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    enc = _trained_like(build_backbone("convnet", in_channels=1, widths=[4, 8]))
    meta = _meta(enc, "convnet", in_channels=1, options={"widths": [4, 8]})
    path, side = save_safetensors(enc, tmp_path / "enc.safetensors", meta)
    loaded = load_file(str(path))
    state = enc.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    side_meta = json.loads(side.read_text())
    assert side_meta["backbone"] == {"name": "convnet", "width": 1.0, "small_stem": False, "in_channels": 1,
                                     "options": {"widths": [4, 8]}}
    assert side_meta["feature_dim"] == 8 and side_meta["view_size"] == 32 and side_meta["mean"] == [0.5] * 3
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["byol"])["backbone"]["name"] == "convnet"
    # the sidecar's backbone section rebuilds the architecture
    rebuilt = build_backbone(**{k: v for k, v in side_meta["backbone"].items() if k != "options"},
                             **side_meta["backbone"]["options"])
    rebuilt.load_state_dict(loaded, strict=True)


def test_onnx_matches_torch(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    enc = _trained_like(build_backbone("resnet18", width=0.25, small_stem=True, in_channels=1))
    meta = backbone_meta(enc, backbone="resnet18", width=0.25, small_stem=True, in_channels=1, mean=[0.3],
                         std=[0.3], view_size=16)
    path, side, diff = export_onnx(enc, tmp_path / "enc.onnx", meta)
    assert diff is not None and diff <= 1e-4
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 16, 16)  # another batch size than at export: the batch axis is dynamic
    with torch.no_grad():
        ref = enc(x).numpy()
    assert abs(sess.run(None, {"images": x.numpy()})[0] - ref).max() <= 1e-4
    assert json.loads(side.read_text())["format"] == "onnx"


def test_onnx_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    enc = build_backbone("convnet", in_channels=1, widths=[4])
    with pytest.raises(ByolError, match=r"pip install byol\[onnx\]"):
        export_onnx(enc, tmp_path / "x.onnx", _meta(enc, "convnet", in_channels=1))


def test_cli_export_formats(tiny_run, tmp_path, capsys):
    run, _, _ = tiny_run
    assert main(["export", "--checkpoint", str(run), "--format", "safetensors", "--out",
                 str(tmp_path / "e.safetensors")]) == 0
    side = json.loads((tmp_path / "e.json").read_text())
    assert side["backbone"]["name"] == "convnet" and side["view_size"] == 16 and len(side["mean"]) == 1
    assert main(["export", "--random-init", "--backbone", "resnet18", "--in-channels", "3", "--format",
                 "torchvision", "--out", str(tmp_path / "r18.pt")]) == 0
    assert "torchvision.models.resnet18() with fc = nn.Identity()" in capsys.readouterr().out


def test_cli_exported_weights_evaluate_as_a_torchvision_model(tiny_run, tmp_path, capsys):
    _, folder, cache = tiny_run
    w = tmp_path / "r18.pt"
    assert main(["export", "--random-init", "--backbone", "resnet18", "--in-channels", "1", "--input-size", "16",
                 "--format", "torchvision", "--out", str(w)]) == 0
    assert "conv1 with 1 input channel" in capsys.readouterr().out
    assert main(["eval", "knn", "--torchvision", "resnet18", "--weights", str(w), "--dataset", str(folder),
                 "--cache-dir", str(cache), "--out-dir", str(tmp_path / "o"), "--k", "5"]) == 0
    card = json.loads((tmp_path / "o" / "knn-imgs.json").read_text())
    assert card["encoder"]["kind"] == "torchvision" and card["encoder"]["backbone"]["in_channels"] == 1
    assert card["metrics"]["k5"] > 50
    assert main(["eval", "knn", "--torchvision", "resnet34", "--weights", str(w), "--dataset", str(folder),
                 "--cache-dir", str(cache), "--out-dir", str(tmp_path / "o")]) == 2
    assert "does not fit torchvision resnet34" in capsys.readouterr().err
