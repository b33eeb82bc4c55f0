"""The background: general requests of other assistants, shipped with voicenlu.

An assistant learns what it is asked, never what it is not asked, so its in-scope score has
nothing to measure strangeness against below its own dev requests; with one intent it has
no contrast at all. ``background.txt`` holds a few hundred requests of the kinds people make
to voice assistants (the house, weather, music, timers, messages, travel, shopping, money,
questions, chat), written for voicenlu. Calibration places them on the in-scope scale
(``voicenlu.calibration``), so a request as unlike the assistant as they are is rejected.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

BACKGROUND_FILE = "background.txt"


@cache
def background_requests() -> tuple[str, ...]:
    """The shipped background requests, one per line of ``background.txt``."""
    text = resources.files("voicenlu.data").joinpath(BACKGROUND_FILE).read_text("utf-8")
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))
