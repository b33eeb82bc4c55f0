"""Errors a user can cause. The CLI prints their message and exits non-zero, without a traceback."""


class VoiceNLUError(Exception):
    """Base class: the message says what went wrong, where, and how to fix it."""


class DataError(VoiceNLUError):
    """A dataset file is missing, malformed or fails its checksum."""


class BundleError(VoiceNLUError):
    """A model bundle is missing, incomplete, tampered with or of an unknown format."""


class InputError(VoiceNLUError):
    """A request to parse is empty, too long or not text."""


class ConfigError(VoiceNLUError):
    """A training or command option is invalid (unknown backbone, bad value)."""


class MissingExtraError(VoiceNLUError):
    """A command needs an optional extra (``voicenlu[train]``...) that is not installed."""
