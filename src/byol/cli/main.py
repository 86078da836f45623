"""``byol`` command line. The only place that reads argv and wires configs to objects (the environment is
read elsewhere only for ``BYOL_*`` switches: the cache directory, the allocator and the fused views)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from byol.errors import ByolError


def _preset_lines() -> list[str]:
    """``name: description`` of every preset shipped in byol/configs (read without importing torch)."""
    from byol.config import preset_descriptions

    return [f"  {name}: {desc}" if desc else f"  {name}" for name, desc in preset_descriptions().items()]


def _epilog() -> str:
    return ("--config takes a YAML path or a preset:\n" + "\n".join(_preset_lines()) + "\n"
            "Override any key with --set section.key=value (e.g. --set optim.base_lr=0.5).")


def _add_common_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help="preset name or YAML file (pretrain default: the data set's preset, or 'folder' for a folder)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--data", default=None, help="data set name (fashion-mnist, cifar10, ...) or image folder / .zip")
    p.add_argument("--data-dir", default=None, help="where the data set's files are (torchvision root or IDX files)")
    p.add_argument("--split", default=None,
                   help="split to pretrain on (data.split, default train); train+unlabeled adds a folder's "
                        "unlabeled/ images (or STL-10's), labels still come from train")
    p.add_argument("--image-size", type=int, default=None, help="resize images to this size when decoding")
    p.add_argument("--download", action="store_true", help="let torchvision download the data set (needs internet)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, mps")


def _extra_from_args(a: argparse.Namespace) -> dict[str, Any]:
    extra: dict[str, Any] = {"data": {}, "train": {}, "optim": {}, "method": {}}
    if getattr(a, "method", None):
        extra["method"]["name"] = a.method
    if a.data:
        extra["data"]["source"] = a.data
    if a.data_dir:
        extra["data"]["data_dir"] = a.data_dir
    if a.split:
        extra["data"]["split"] = a.split
    if a.image_size:
        extra["data"]["image_size"] = a.image_size
    if a.download:
        extra["data"]["download"] = True
    if a.threads:
        extra["train"]["threads"] = a.threads
    if a.device:
        extra["train"]["device"] = a.device
    for key, section in (("batch_size", "optim"), ("epochs", "train"), ("budget", "train"), ("seed", "train")):
        v = getattr(a, key, None)
        if v is not None:
            extra[section][key] = v
    if getattr(a, "no_progress", False):
        extra["train"]["progress"] = False
    return {k: v for k, v in extra.items() if v}


def cmd_pretrain(a: argparse.Namespace) -> int:
    from byol.config import find_preset
    from byol.runtime.dist import env_rank
    from byol.train.config import build_config, load_run_config

    if a.resume:
        from byol.train.pretrain import run_pretrain

        if a.method:
            raise ByolError("--resume continues the run's method: drop --method (or start a new run)")
        run_dir = Path(a.resume)
        cfg = load_run_config(run_dir, overrides=a.overrides, extra=_extra_from_args(a))
        summary = run_pretrain(cfg, run_dir, resume=True, allow_changes=a.allow_changes)
        if summary.get("finished"):
            print(f"{run_dir} already finished ({summary['steps']} steps): nothing to train")
            return 0
    else:
        # the config is checked before any data is read: a config mistake is reported at once
        device = next((o.split("=", 1)[1] for o in reversed(a.overrides or []) if o.startswith("train.device=")),
                      a.device)
        preset = a.config or _default_preset(a.data, device)
        cfg = build_config(files=[find_preset(preset)], overrides=a.overrides, extra=_extra_from_args(a))
        if not a.config and env_rank() == 0:  # under torchrun rank 0 alone says it
            print(_preset_line(preset, cfg.method.name), file=sys.stderr)
        run_dir = Path(a.run_dir) if a.run_dir else Path("runs") / _default_name(cfg)
        if (run_dir / "checkpoints" / "last.pt").exists() and not a.overwrite:
            raise ByolError(f"{run_dir} already holds a run: resume it with `byol pretrain --resume {run_dir}`, "
                            "pick another --run-dir, or pass --overwrite")
        from byol.train.pretrain import run_pretrain

        asked = a.batch_size is not None or any(o.startswith("optim.batch_size=") for o in a.overrides or [])
        summary = run_pretrain(cfg, run_dir, fit_batch=not a.config and not asked)
    if env_rank() != 0:  # under torchrun rank 0 alone reports
        return 0
    knn = [h["knn_top1"] for h in summary["history"] if "knn_top1" in h]
    print(f"done: {summary['epochs']:.2f} epochs, {summary['steps']} steps, {summary['seconds']:.0f} s "
          f"({summary['stop_reason']}, {summary['precision']})" + (f", online kNN {knn[-1]:.2f}%" if knn else "") + f"; run: {run_dir}")
    from byol.train.verdict import verdict_lines

    for line in verdict_lines(summary["verdict"]):
        print(line)
    return 0


def _default_preset(data: str | None, device: str | None = None) -> str:
    """The preset of a pretraining run without --config: the data set's own preset when there is one
    (fashion-mnist, cifar10), else ``folder`` (32 px, small CNN, sized for a CPU) or, when the run will be
    on a CUDA GPU, ``folder-gpu`` (ResNet-18 at 96 px). The paper's recipe is opt-in."""
    from byol.config import preset_descriptions

    name = (data or "fashion-mnist").lower()
    described = preset_descriptions()
    if name in described and not name.startswith("folder") and name != "tiny" and not Path(name).exists():
        preset = name
    else:
        preset = "folder-gpu" if _on_gpu(device) else "folder"
    return preset


def _preset_line(preset: str, method: str) -> str:
    """The line announcing the default preset, naming the method that will train: the defaults' descriptions
    begin with "BYOL, ", which ``--method simclr`` does not train (only the rest of the preset applies). On
    the CPU folder preset BYOL's line is followed by a note that SimCLR trained the better encoder there."""
    from byol.config import preset_descriptions

    what = preset_descriptions()[preset].removeprefix("BYOL, ")
    paper = "; the paper's recipe is --config imagenet-paper" if method == "byol" else ""
    line = f"byol: no --config: using the '{preset}' preset ({what}) to train {method}{paper}"
    if preset == "folder" and method == "byol":  # measured at this preset's budget: docs/results.md
        line += ("\nbyol: note: at this budget SimCLR (--method simclr) trained the better encoder in our "
                 "measurements (equal wall time, 2 data sets, 2 seeds: +1.8 to +4.6 points linear, +3.1 to "
                 "+7.1 kNN; docs/results.md)")
    return line


def _on_gpu(device: str | None) -> bool:
    """Whether a run with ``--device``/``train.device`` ``device`` (None or auto: the default) trains on CUDA."""
    if device and device != "auto":
        return device.startswith("cuda")
    import torch

    return torch.cuda.is_available()


def _default_name(cfg) -> str:
    import time

    src = Path(cfg.data.source).stem if os.sep in cfg.data.source else cfg.data.source
    return f"{src}-{cfg.method.name}-{cfg.model.backbone}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_show_views(a: argparse.Namespace) -> int:
    import torch

    from byol.augment import TwoViewAugment, save_view_grid
    from byol.config import find_preset
    from byol.train.config import build_config
    from byol.data import load_images, normalization
    from byol.data.sizes import Sizes

    files = [find_preset(a.config)] if a.config else []
    cfg = build_config(files=files, overrides=a.overrides, extra=_extra_from_args(a))
    d = cfg.data
    data = load_images(d.source, d.split, image_size=d.image_size, data_dir=d.data_dir, cache_dir=d.cache_dir,
                       download=d.download)
    mean, std = normalization(d.source, data.images, d.mean, d.std)
    sizes = Sizes.resolve(decode=d.image_size, view=d.view_size, images=data.image_size)  # as a run would
    s1, s2 = cfg.views.specs
    g = torch.Generator().manual_seed(a.seed)
    idx = torch.randperm(len(data), generator=g)[: a.images]
    v = cfg.views  # the run's views, multi-crop's small ones included (one extra column each)
    aug = TwoViewAugment(s1, s2, sizes.view, mean, std, small_crops=v.small_crops, small_spec=v.small_spec,
                         small_size=v.small_size)
    out = save_view_grid(torch.as_tensor(data.images[idx.sort().values]), aug, a.out, n_views=a.views, generator=g)
    print(f"wrote {out or a.out}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from byol.runtime.dist import env_world_size

    if env_world_size() > 1:
        raise ByolError("byol demo runs in one process: under torchrun use `byol pretrain` (docs/distributed.md)")
    from byol.cli.demo import run_demo

    run_demo(Path(a.run_dir), config=a.config, budget=a.budget, overrides=a.overrides, data_dir=a.data_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    epilog = _epilog()
    parser = argparse.ArgumentParser(prog="byol", description="BYOL self-supervised pretraining and evaluation.",
                                     epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    from byol import __version__

    parser.add_argument("--version", action="version", version=f"byol {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pretrain an encoder with BYOL", epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common_data(p)
    p.add_argument("--run-dir", default=None, help="run directory (default runs/<data>-<backbone>-<time>)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR where it stopped")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in a run directory that holds a run (its run files, checkpoints and cards are removed)")
    p.add_argument("--allow-changes", action="store_true",
                   help="with --resume: apply --set/--budget/--epochs changes of keys that do not change the result "
                        "(budget, epochs, log/checkpoint cadence, progress, threads, device)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (all devices, accumulation)")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--budget", default=None, help="wall-clock budget, e.g. 10m or 1h30m: schedules fit it")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--method", default=None, help="sets method.name: byol (default) or another registered method (simclr, moco, ...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("show-views", help="write a PNG grid of images and their augmented views (T, T', and "
                                           "multi-crop's small views when views.small_crops > 0)")
    _add_common_data(p)
    p.add_argument("--out", default="views.png")
    p.add_argument("--images", type=int, default=8, help="how many images (rows)")
    p.add_argument("--views", type=int, default=8, help="views per image (alternating T and T')")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_show_views)

    p = sub.add_parser("demo", help="BYOL on Fashion-MNIST on this CPU, then linear + kNN evaluation")
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--config", default="fashion-mnist")
    p.add_argument("--budget", default=None, help="pretraining wall-clock budget (default: the preset's)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_demo)

    from byol.cli.evaluate import add_subcommands  # eval linear|knn|finetune|transfer, embed, export, report

    add_subcommands(sub)
    from byol.cli.reproduce import add_subcommand as add_reproduce

    add_reproduce(sub)
    return parser


_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


def _one_line_warnings() -> None:
    """byol's own warnings (skipped files, a cache that cannot be written, a suspected collapse...) are
    printed as one plain ``byol: warning:`` line, not Python's two lines with a line of our source code."""
    default = warnings.showwarning
    if getattr(default, "_byol_one_line", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        if issubclass(category, UserWarning) and str(filename).startswith(_PACKAGE_DIR):
            text = str(message).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            print(f"byol: warning: {text}", file=file or sys.stderr)
            return
        default(message, category, filename, lineno, file, line)

    show._byol_one_line = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from byol.run.files import pin_code_state
    from byol.runtime import tune_malloc

    pin_code_state()  # the commit whose code this process imported, whatever is committed while it runs

    tune_malloc()  # keep freed memory in the process unless BYOL_MALLOC=glibc (byol/runtime.py)
    warnings.filterwarnings("default", category=UserWarning, module="byol")
    _one_line_warnings()
    try:
        return int(args.func(args) or 0)
    except ByolError as exc:
        print(f"byol: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbyol: interrupted (a checkpoint was saved if a run had started; continue with "
              "`byol pretrain --resume RUN_DIR`)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
