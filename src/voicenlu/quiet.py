"""Silence what other libraries say about their own internals while voicenlu works.

torch's ONNX exporter warns about its options, missing torchvision operators and tree specs,
ONNX Runtime's quantizer suggests a pre-processing step that does not apply here, and
transformers draws a bar while it loads weights. None of it is something a user can act on,
and it buries the lines that are.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

NOISY = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextmanager
def quiet() -> Iterator[None]:
    """Warnings and log lines below ERROR from those libraries are dropped inside the block."""
    loggers = [logging.getLogger(name) for name in NOISY]
    levels = [logger.level for logger in loggers]
    root, only_errors = logging.getLogger(), _BelowError()  # ONNX Runtime logs on the root
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        root.addFilter(only_errors)
        try:
            yield
        finally:
            root.removeFilter(only_errors)
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def no_loading_bars() -> None:
    """transformers' bar while it loads weights: a second bar before the training one."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
