"""One row of the Fashion-MNIST recipe sweep (docs/sweeps.md): pretrain BYOL for a fixed number of
epochs with the given knobs, then kNN (k=20, cosine, temperature-weighted) and linear (L-BFGS logistic
regression, fixed l2=1e-4). Appends a JSON line to --out.

Rows are scored on a validation split (``--score val``, the default): a seeded, class-stratified 1/6 of
train (10,000 images) is held out of pretraining and scored against the other 50,000; the test split is
never read. ``--score test`` (pretrain on all 60k, score on the 10k test images) is how the rows before
2026-12-01 were scored (docs/sweeps.md says which); use it only to report a recipe already chosen.

It uses the library's pieces (views, models, BYOL, optimizers, schedules) in a bare loop, so a sweep
row measures the recipe, not the engine's extras (checkpoints, online kNN). Example:

    python benchmarks/sweep_fmnist.py --tag base --opt sgd --lr 0.6 --wd 5e-4 --bs 128 --tau 0.97 \
        --scale 0.2 --blur1 0 --blur2 0 --epochs 3
"""
import argparse, json, time

import torch, torch.nn.functional as F
from byol.augment import TwoViewAugment, paper_views
from byol.augment.views import eval_transform
from byol.models import build_backbone
from byol.methods import BYOLConfig
from byol.methods import BYOL
from byol.optim.optimizers import build_optimizer, set_lr
from byol.optim.schedules import warmup_cosine
ap = argparse.ArgumentParser()
ap.add_argument("--bb", default="convnet"); ap.add_argument("--widths", default="16,32,64,128")
ap.add_argument("--width", type=float, default=1.0); ap.add_argument("--small-stem", type=int, default=0)
ap.add_argument("--size", type=int, default=28); ap.add_argument("--bs", type=int, default=256)
ap.add_argument("--epochs", type=float, default=3); ap.add_argument("--lr", type=float, default=0.3)
ap.add_argument("--opt", default="lars"); ap.add_argument("--wd", type=float, default=1e-6)
ap.add_argument("--tau", type=float, default=0.99); ap.add_argument("--scale", type=float, default=0.08)
ap.add_argument("--blur1", type=float, default=1.0); ap.add_argument("--blur2", type=float, default=0.1)
ap.add_argument("--hid", type=int, default=1024); ap.add_argument("--pdim", type=int, default=128)
ap.add_argument("--warm", type=float, default=0.1); ap.add_argument("--init", default="copy")
ap.add_argument("--sol2", type=float, default=0.2); ap.add_argument("--jit", type=float, default=0.8)
ap.add_argument("--tag", default=""); ap.add_argument("--convs", default="")
ap.add_argument("--out", default="benchmarks/sweep_fmnist.jsonl")
ap.add_argument("--score", choices=("val", "test"), default="val")
ap.add_argument("--seed", type=int, default=0, help="initialisation and views (the validation split stays fixed)")
a = ap.parse_args()
torch.manual_seed(a.seed)
from byol.data import load_images
tr = load_images("fashion-mnist", "train", progress=False)
if a.score == "val":  # select on validation: a stratified 1/6 of train, held out of pretraining too
    from byol.eval.splits import stratified_split
    keep, held = stratified_split(tr.labels, 1 / 6, seed=0)
    Xtr, Ytr, Xte, Yte = tr.images[keep], tr.labels[keep], tr.images[held], tr.labels[held]
else:
    te = load_images("fashion-mnist", "test", progress=False)
    Xtr, Ytr, Xte, Yte = tr.images, tr.labels, te.images, te.labels
mean, std = [0.2860], [0.3530]
t1, t2 = paper_views()
common = dict(crop_scale=(a.scale, 1.0), jitter_p=a.jit)
t1 = t1.replace(blur_p=a.blur1, **common); t2 = t2.replace(blur_p=a.blur2, solarize_p=a.sol2, **common)
aug = TwoViewAugment(t1, t2, a.size, mean, std)
opts = {"widths": [int(x) for x in a.widths.split(",")]} if a.bb == "convnet" else {}
if a.convs: opts["convs"] = [int(x) for x in a.convs.split(",")]
mk = lambda: build_backbone(a.bb, width=a.width, small_stem=bool(a.small_stem), in_channels=1, **opts)
m = BYOL(mk, BYOLConfig(proj_hidden=a.hid, proj_dim=a.pdim, pred_hidden=a.hid, tau_base=a.tau, target_init=a.init)).to(memory_format=torch.channels_last)
peak = a.lr * a.bs / 256
opt = build_optimizer(a.opt, m.trainable_modules(), lr=peak, weight_decay=a.wd)
spe = len(Xtr) // a.bs; K = int(a.epochs * spe); W = int(a.warm * K)
g = torch.Generator().manual_seed(a.seed + 1)
def feats(enc, X):
    enc.eval(); out = []
    with torch.inference_mode():
        for i in range(0, len(X), 2048):
            out.append(enc(eval_transform(X[i:i+2048], a.size, mean, std).contiguous(memory_format=torch.channels_last)))
    enc.train(); return torch.cat(out)
def knn(ftr, fte, k=20, T=0.07):
    ftr = F.normalize(ftr, dim=1); fte = F.normalize(fte, dim=1); correct = 0
    for i in range(0, len(fte), 1000):
        s = fte[i:i+1000] @ ftr.T; v, idx = s.topk(k, dim=1)
        w = (v / T).exp(); votes = torch.zeros(len(v), 10).scatter_add_(1, Ytr[idx], w)
        correct += (votes.argmax(1) == Yte[i:i+1000]).sum().item()
    return 100 * correct / len(fte)
def linear(ftr, fte, l2=1e-4, iters=150):
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6; a_, b_ = (ftr - mu) / sd, (fte - mu) / sd
    Wt = torch.zeros(a_.shape[1], 10, requires_grad=True); bt = torch.zeros(10, requires_grad=True)
    o = torch.optim.LBFGS([Wt, bt], max_iter=iters, line_search_fn="strong_wolfe", history_size=20)
    def cl():
        o.zero_grad(); l = F.cross_entropy(a_ @ Wt + bt, Ytr) + l2 / 2 * (Wt ** 2).sum(); l.backward(); return l
    o.step(cl)
    return 100 * ((b_ @ Wt + bt).argmax(1) == Yte).float().mean().item()
t0 = time.time(); step = 0; hist = []
while step < K:
    perm = torch.randperm(len(Xtr), generator=g)
    for i in range(spe):
        if step >= K: break
        x = Xtr[perm[i*a.bs:(i+1)*a.bs]]
        v1, v2 = aug(x, g)
        set_lr(opt, warmup_cosine(step, K, peak, W))
        out = m(v1.contiguous(memory_format=torch.channels_last), v2.contiguous(memory_format=torch.channels_last))
        opt.zero_grad(set_to_none=True); out["loss"].backward(); opt.step(); m.after_step(step, K); step += 1
        if step % 100 == 0: hist.append(round(out["loss"].item(), 3))
train_s = time.time() - t0
ftr, fte = feats(m.encoder, Xtr), feats(m.encoder, Xte)
res = dict(vars(a), train_s=round(train_s), pairs_s=round(K * a.bs / train_s), knn=round(knn(ftr, fte), 2), lin=round(linear(ftr, fte), 2), loss=hist[-3:])
print(json.dumps(res), flush=True)
with open(a.out, "a") as f: f.write(json.dumps(res) + "\n")
