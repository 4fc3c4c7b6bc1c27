"""One exception type for user mistakes: the message says what is wrong and what to do."""


class SatAccelError(Exception):
    """A user-facing error whose message is one actionable sentence (no traceback needed)."""


class ConfigError(SatAccelError, ValueError):
    """Flags or arguments that do not fit together."""


class DataError(SatAccelError, ValueError):
    """A dataset, path or split that cannot be used."""


class CheckpointError(SatAccelError, ValueError):
    """A checkpoint or model folder that cannot be read or written."""


class HookError(SatAccelError, TypeError):
    """A user callback (forward_step, create_dataset_function, ...) returned something unusable."""
