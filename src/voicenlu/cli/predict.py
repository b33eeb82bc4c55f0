"""``voicenlu predict`` and ``voicenlu info``: parse requests with a bundle, show what it holds.
Both run on the base install."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from voicenlu.cli.common import add_precision_option, format_result
from voicenlu.values import DEFAULT_TIMEZONE


def add_commands(sub) -> None:
    p = sub.add_parser("predict", help="parse requests: intent, slots, confidence")
    p.add_argument("bundle", help="model bundle directory")
    # One positional list for both kinds of input: a second, optional one would swallow nothing
    # before an option and leave the texts after it unrecognised.
    p.add_argument(
        "texts", nargs="+", metavar="TEXT", help="requests to parse, - for stdin, or WAV files"
    )
    p.add_argument(
        "--audio",
        action="store_true",
        help="the inputs are 16 kHz mono 16-bit WAV files of spoken requests (voicenlu[speech])",
    )
    p.add_argument("--json", action="store_true", help="print the full JSON result per request")
    p.add_argument(
        "--threshold",
        type=float,
        help="override the out-of-scope threshold: reject below this in-scope score (0 to 1)",
    )
    add_precision_option(p)
    p.add_argument(
        "--reference-time",
        metavar="ISO",
        help="resolve relative times from this instant, e.g. 2026-11-28T12:00:00+01:00 "
        "(default: now)",
    )
    p.add_argument(
        "--timezone",
        metavar="NAME",
        help="IANA time zone the resolved times are given in, e.g. Europe/Zurich "
        f"(default: {DEFAULT_TIMEZONE})",
    )
    p.add_argument(
        "--no-split",
        dest="split",
        action="store_false",
        help="parse each text as one request, even when it holds several",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "info",
        help="what a bundle holds: intents, slots and their types, entity lists, data, figures",
        description="Shows a bundle from its manifest: intents and slots with their training "
        "counts, each slot's type and the entity values behind it, where the training data "
        "came from and how the checkpoint was chosen, its figures, out-of-scope settings and "
        "files.",
    )
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("--json", action="store_true", help="print the same as JSON")
    p.set_defaults(func=cmd_info)


def cmd_predict(args) -> int:
    from voicenlu.runtime import Parser

    parser = Parser.load(args.bundle, precision=args.precision, split=args.split)
    if args.audio:
        results = [
            parser.parse_audio(
                path,
                threshold=args.threshold,
                reference_time=args.reference_time,
                timezone=args.timezone,
            )
            for path in args.texts
        ]
    else:
        _audio_hint(args.texts)
        results = parser.parse_batch(
            _read_texts(args),
            threshold=args.threshold,
            reference_time=args.reference_time,
            timezone=args.timezone,
        )
    for result in results:
        print(json.dumps(result, ensure_ascii=False) if args.json else format_result(result))
    return 0


def _read_texts(args) -> list[str]:
    if args.texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin]
        return [t for t in texts if t.strip()]
    return args.texts


def _audio_hint(texts: list[str]) -> None:
    """A request that names a recording was most likely meant as one: say how."""
    wavs = [t for t in texts if t.lower().endswith(".wav") and Path(t).is_file()]
    if wavs:
        print(
            f"note: {wavs[0]} is a WAV file, parsed here as text: pass --audio to transcribe "
            "it (needs voicenlu[speech])",
            file=sys.stderr,
        )


def cmd_info(args) -> int:
    from voicenlu.info import bundle_info, render_info

    info = bundle_info(args.bundle)
    print(json.dumps(info, indent=2, ensure_ascii=False) if args.json else render_info(info))
    return 0
