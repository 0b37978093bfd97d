"""The trainer's user-facing error; configuration mistakes are `moodtheme.config.ConfigError`."""


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says where and why, in one line."""
