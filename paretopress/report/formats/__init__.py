"""Every export format, registered by importing its module here (one line per format)."""

from paretopress.report.formats import compressed_tensors, gguf, transformers  # noqa: F401 - registers the formats
from paretopress.report.formats.base import FORMATS, ExportFormat

__all__ = ["FORMATS", "ExportFormat"]
