"""Configuration: typed sections (:mod:`.schema`) loaded from YAML with inheritance and
``key=value`` overrides (:mod:`.loader`)."""
from .loader import (
                     apply_overrides,
                     config_dir,
                     deep_merge,
                     dump_config,
                     from_stored,
                     load_config,
                     load_reference,
                     parse_override,
                     reference_path,
                     shipped_configs,
                     validate_config,
                     with_overrides,
                     with_values,
)
from .schema import SingrConfig

__all__ = ["SingrConfig", "apply_overrides", "config_dir", "deep_merge", "dump_config", "from_stored", "load_config",
           "load_reference", "parse_override", "reference_path", "shipped_configs", "validate_config",
           "with_overrides", "with_values"]
