"""User-facing errors.

A :class:`PipelineError` is a problem with the user's input (params, data, paths) that the stage
reports as one clear line, without a traceback. Anything else is a bug and keeps its traceback.
"""


class PipelineError(Exception):
    """A problem with the user's input, reported as a one-line message by the stage."""


class ConfigError(PipelineError):
    """``params.yaml`` (or another config file) is missing, malformed or fails validation."""


class DataError(PipelineError):
    """The input data is missing, empty or unusable."""


class FileError(PipelineError):
    """A file or directory could not be read or written (missing, full disk, no permission, a
    path that cannot be created): the message names the path and the system's reason."""
