"""Typed, frozen run configuration: the sections (`schema`), files and overrides (`parse`) and
the checks of impossible values (`validate`), all before anything compiles."""

from tokenzero.config.parse import (all_keys, apply_overrides, deep_merge, from_dict, load_toml,
                                    replace, resolve, to_dict)
from tokenzero.config.schema import (EvalConfig, MeshConfig, ModelConfig, OptimConfig,
                                     RunConfig, SearchConfig, SelfPlayConfig, TaskConfig)
from tokenzero.config.validate import fit_model_to_task, validate
from tokenzero.errors import ConfigError

__all__ = [
    "ConfigError", "EvalConfig", "MeshConfig", "ModelConfig", "OptimConfig", "RunConfig",
    "SearchConfig", "SelfPlayConfig", "TaskConfig", "all_keys", "apply_overrides", "deep_merge",
    "fit_model_to_task", "from_dict", "load_toml", "replace", "resolve", "to_dict", "validate",
]
