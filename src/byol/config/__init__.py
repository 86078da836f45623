"""Configuration: the typed sections of a run, presets, dotted overrides and their checks (no torch import).

- :mod:`byol.config.schema`: the sections (data, model, views, optim, train and every method's base),
  presets (``configs/*.yaml``), YAML loading, layers and overrides;
- :mod:`byol.config.checks`: the one checker of the ranges and choices the sections' fields declare,
  and did-you-mean suggestions;
- :mod:`byol.config.views`: the view distributions T and T' as plain data (``ViewSpec``);
- :mod:`byol.config.duration`: ``"10m"`` / ``"1h30m"`` -> seconds.

The whole-run ``PretrainConfig`` (whose method section depends on the method registry) is
:mod:`byol.train.config`. The public names of :mod:`byol.config.schema` are re-exported here.
"""

from byol.config.schema import (
    PRESETS_DIR,
    DataConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    ViewsConfig,
    check_batch,
    fitting_batch,
    config_layers,
    find_preset,
    from_dict,
    load_yaml,
    merge,
    parse_override,
    parse_section,
    preset_descriptions,
    preset_names,
    to_dict,
)

__all__ = [
    "PRESETS_DIR", "DataConfig", "MethodConfig", "ModelConfig", "OptimConfig", "TrainConfig", "ViewsConfig",
    "check_batch", "fitting_batch", "config_layers", "find_preset", "from_dict", "load_yaml", "merge",
    "parse_override", "parse_section", "preset_descriptions", "preset_names", "to_dict",
]
