"""voicenlu: intent detection and slot filling for voice assistants.

``Parser`` parses requests (runtime install); ``train`` and ``evaluate`` make and score
bundles (``voicenlu[train]``). All three are imported on first use, so ``import voicenlu``
loads neither onnxruntime nor torch.
"""

from voicenlu.errors import VoiceNLUError
from voicenlu.version import __version__

__all__ = ["Parser", "VoiceNLUError", "__version__", "evaluate", "train"]


def __getattr__(name: str):
    if name == "Parser":
        from voicenlu.runtime import Parser

        return Parser
    if name in ("train", "evaluate"):
        from voicenlu import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
