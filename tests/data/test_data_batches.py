"""The training loop's one batch interface (byol.data.batches): both paths make their views through it,
and the data package's imports have no cycle."""

import re
from pathlib import Path

import torch

import byol.data
from byol.data.batches import CachedImages, CropBatch, ImageBatch


class _Recorder:
    """A view maker that says which entry point made the views and with what."""

    def __call__(self, images, generator, **kw):
        return ("whole", images, kw), None

    def from_crops(self, crops1, crops2, generator, **kw):
        return ("crops", torch.cat([crops1, crops2]), kw), None


def test_cached_images_hand_whole_gathered_images_to_the_view_maker():
    images = torch.arange(6 * 1 * 2 * 2, dtype=torch.uint8).view(6, 1, 2, 2)
    source = CachedImages(images)
    idx = [torch.tensor([4, 1]), torch.tensor([0, 5])]
    batches = list(source.batches(iter(idx), epoch=3))
    assert len(source) == 6 and [type(b) for b in batches] == [ImageBatch, ImageBatch]
    (kind, got, kw), _ = batches[0].views(_Recorder(), None, torch.device("cpu"), shard=(0, 1))
    assert kind == "whole" and torch.equal(got, images[torch.tensor([4, 1])]) and kw == {"shard": (0, 1)}


def test_a_crop_batch_makes_its_views_from_the_crops():
    c1, c2 = torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.ones(2, 3, 4, 4, dtype=torch.uint8)
    batch = CropBatch(c1, c2, torch.tensor([0, 1]), (), ())
    (kind, got, kw), _ = batch.views(_Recorder(), None, torch.device("cpu"))
    assert kind == "crops" and torch.equal(got, torch.cat([c1, c2])) and kw == {}


def _data_imports() -> dict[str, set[str]]:
    root = Path(byol.data.__file__).parent
    pattern = re.compile(r"^\s*from byol\.data\.(\w+) import|^\s*from byol\.data import (\w+)", re.M)
    graph: dict[str, set[str]] = {}
    for f in root.glob("*.py"):
        if f.stem != "__init__":
            graph[f.stem] = {a or b for a, b in pattern.findall(f.read_text())} - {f.stem}
    return graph


def test_the_data_package_imports_have_no_cycle():
    graph, done, path = _data_imports(), set(), []

    def visit(node):
        assert node not in path, f"import cycle: {' -> '.join(path[path.index(node):] + [node])}"
        if node in done:
            return
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        path.pop()
        done.add(node)

    assert {"stream", "streamloader", "batches"} <= set(graph)
    for node in sorted(graph):
        visit(node)
