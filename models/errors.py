"""The models' expected failures: bad data, a refused registry operation, an unusable lake or
export. Light to import (no heavy dependency), so the CLI can report them in one line."""


class DataError(ValueError):
    """The data cannot be used; the message says what is wrong with which file."""


class ExportError(RuntimeError):
    """The ONNX model does not reproduce the native model's scores."""


class LakeError(RuntimeError):
    """The lake cannot be read or written as asked; the message says why."""


class RegistryError(RuntimeError):
    """A registry operation was refused; the message says why."""


class PromotionRefused(RegistryError):
    """The promotion gate refused a candidate (its figures are in the message)."""
