"""Picovoice Rhino context YAML (read only): templates expanded by ``voicenlu.data.templates``.

The file's top level is ``context:`` (Rasa data has ``nlu:``), which is how a ``.yml``/``.yaml``
file is told apart. Each ``$type:name`` slot gets type ``type``, a closed custom entity whose
canonical values are the slot list (Rhino accepts nothing else).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from voicenlu.data.formats.common import Dataset, Format, fail, read_text
from voicenlu.data.templates import (
    MAX_PER_INTENT,
    SEED,
    TemplateError,
    expand,
    is_context,
    parse_context,
)
from voicenlu.data.types import CustomEntity, SlotTypes


def is_rhino(path: Path) -> bool:
    """Whether a YAML file is a Rhino context; a file that is not YAML is left to Rasa's reader,
    which reports the syntax error with its line."""
    try:
        return is_context(yaml.safe_load(read_text(path)))
    except yaml.YAMLError:
        return False


def read(path: Path) -> Dataset:
    try:
        context = parse_context(yaml.safe_load(read_text(path)))
    except (TemplateError, yaml.YAMLError) as exc:
        raise fail(path, "", str(exc), "see the syntax in voicenlu.data.templates") from None
    utterances = expand(context)
    types = context.slot_types()
    slot_types = SlotTypes(
        types=types,
        entities={
            t: CustomEntity(t, {v: () for v in context.slots[t]}) for t in set(types.values())
        },
        origins={slot: (str(path), f"slots.{t}") for slot, t in types.items()},
    )
    notes = [
        f"expanded {len(context.templates)} expressions into {len(utterances)} utterances "
        f"(at most {MAX_PER_INTENT} per intent, sampled with seed {SEED} beyond that)"
    ]
    origins = [(str(path), f"expansion {i}") for i in range(len(utterances))]
    return Dataset(utterances, "rhino", True, notes, str(path), origins, slot_types=slot_types)


def write(dataset: Dataset, path: Path, notes: list[str]) -> str:
    raise fail(
        path,
        "",
        "Rhino contexts are read, not written",
        "write Snips NLU JSON or Rasa YAML instead",
    )


FORMAT = Format("rhino", read, write)
