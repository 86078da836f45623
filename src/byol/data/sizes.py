"""The image sizes of a run, resolved once from what the user asked for and what the data turned out to be.

A config keeps what the user asked for (``data.image_size``, ``data.view_size``; None stays None); the
run resolves :class:`Sizes` once its data is known (:func:`byol.train.pretrain.build_pretrain`) and stores
them beside the config (the checkpoint's ``sizes`` entry and ``env.json``'s), and everything after
training (evaluation, embedding, export, the random-init baseline of the run) reads them back instead of
resolving ``view_size or image_size`` again. Pure Python: no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Sizes"]


@dataclass(frozen=True)
class Sizes:
    """The sizes of a run's images, in pixels (square sides)."""

    decode: int | None  #: ``data.image_size``: shorter side resized and centre-cropped when decoding; None: native
    images: int | None  #: the training images as decoded (a streamed run: its in-memory sample); None: not recorded
    view: int  #: the views' size: the encoder's input in training, and by default in evaluation

    @classmethod
    def resolve(cls, *, decode: int | None, view: int | None, images: int) -> Sizes:
        """The sizes of a run that asked for ``decode`` and ``view`` (None: not asked) on ``images`` px
        images: the views are ``view``, else the images' size."""
        return cls(decode=decode, images=int(images), view=int(view or images))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (a checkpoint loads them with ``weights_only=True``; ``env.json``)."""
        return asdict(self)

    @classmethod
    def stored(cls, record: dict[str, Any] | None, config: dict[str, Any]) -> Sizes | None:
        """The sizes a run stored (``record``: a checkpoint or ``env.json``, its ``sizes`` entry), else those of
        a run written before they were stored, from its config (its ``data.view_size`` then held the resolved
        view size); None when neither says (e.g. a hand-written config without sizes)."""
        kept = (record or {}).get("sizes")
        if kept:
            return cls(decode=kept.get("decode"), images=kept.get("images"), view=int(kept["view"]))
        d = config.get("data") or {}
        view = d.get("view_size") or d.get("image_size")
        return cls(decode=d.get("image_size"), images=None, view=int(view)) if view else None
