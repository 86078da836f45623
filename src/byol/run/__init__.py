"""The run directory on disk: its files (:mod:`byol.run.files`: ``config.yaml``, ``env.json``,
``metrics.jsonl``, ``summary.json``, the encoder of a finished run), checkpoints (:mod:`byol.run.checkpoints`:
atomic, sha256-verified, the run lock) and what a resume may change (:mod:`byol.run.resume`).

Every file of a run, a results card or a reproduction record is written through :mod:`byol.atomic` (at the
top of the package, layer 0, so that the data and model layers use it too).
"""
