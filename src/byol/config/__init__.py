"""Configuration: the typed sections of a run, presets, dotted overrides and their checks (no torch import).

- :mod:`byol.config.schema`: the dataclasses, presets (``configs/*.yaml``), YAML loading and overrides;
- :mod:`byol.config.checks`: value ranges, choices and did-you-mean suggestions;
- :mod:`byol.config.views`: the view distributions T and T' as plain data (``ViewSpec``);
- :mod:`byol.config.duration`: ``"10m"`` / ``"1h30m"`` -> seconds.

The public names of :mod:`byol.config.schema` are re-exported here (``from byol.config import build_config``).
"""

from byol.config.schema import (
    PRESETS_DIR,
    DataConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    PretrainConfig,
    TrainConfig,
    ViewsConfig,
    build_config,
    check_batch,
    find_preset,
    from_dict,
    load_yaml,
    merge,
    parse_override,
    preset_descriptions,
    preset_names,
    to_dict,
    validate_pretrain,
)

__all__ = [
    "PRESETS_DIR", "DataConfig", "MethodConfig", "ModelConfig", "OptimConfig", "PretrainConfig", "TrainConfig",
    "ViewsConfig", "build_config", "check_batch", "find_preset", "from_dict", "load_yaml", "merge",
    "parse_override", "preset_descriptions", "preset_names", "to_dict", "validate_pretrain",
]
