"""voicenlu: intent detection and slot filling for voice assistants."""

from voicenlu.errors import VoiceNLUError

__version__ = "0.1.0"
__all__ = ["Parser", "VoiceNLUError", "__version__"]


def __getattr__(name: str):
    # Imported lazily so that ``import voicenlu`` stays light (no onnxruntime until asked).
    if name == "Parser":
        from voicenlu.runtime import Parser

        return Parser
    raise AttributeError(name)
