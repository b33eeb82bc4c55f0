"""``voicenlu listen``: parse a live audio stream, one result per spoken command."""

from __future__ import annotations

import json
import sys

from voicenlu.cli.common import add_precision_option, format_result
from voicenlu.errors import ConfigError
from voicenlu.values import DEFAULT_TIMEZONE


def add_commands(sub) -> None:
    p = sub.add_parser(
        "listen",
        help="parse a live audio stream: one result per spoken command (voicenlu[speech])",
        description="Reads 16 kHz mono 16-bit PCM, raw or as a WAV stream, from a file or "
        "stdin (-), e.g. `arecord -r 16000 -f S16_LE -c 1 -t raw | voicenlu listen BUNDLE -`, "
        "and prints one result per spoken command as soon as its end is heard.",
    )
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("input", nargs="?", default="-", help="raw PCM or WAV file, - for stdin")
    p.add_argument("--json", action="store_true", help="one JSON result per line")
    p.add_argument("--threshold", type=float, default=None, help="in-scope threshold")
    add_precision_option(p)
    p.add_argument("--timezone", default=DEFAULT_TIMEZONE, help="IANA time zone for times")
    p.set_defaults(func=cmd_listen)


def cmd_listen(args) -> int:
    from voicenlu.runtime import Parser

    parser = Parser.load(args.bundle, precision=args.precision)
    source = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
    with source:
        head = source.read(12)
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            _skip_wav_header(source, args.input)
        results = parser.listen(
            _chunks(source, head if head[:4] != b"RIFF" else b""),
            threshold=args.threshold,
            timezone=args.timezone,
        )
        for result in results:
            print(json.dumps(result, ensure_ascii=False) if args.json else format_result(result))
            sys.stdout.flush()
    return 0


def _chunks(source, first: bytes):
    """The stream's bytes as they come (0.1 s at a time)."""
    if first:
        yield first
    while chunk := source.read1(3200) if hasattr(source, "read1") else source.read(3200):
        yield chunk


def _skip_wav_header(source, name: str) -> None:
    """Read a WAV stream's chunks up to its samples; refuse anything but 16 kHz mono 16-bit."""
    while True:
        head = source.read(8)
        if len(head) < 8:
            raise ConfigError(f"{name}: the WAV stream ends before its data chunk.")
        kind, size = head[:4], int.from_bytes(head[4:], "little")
        if kind == b"data":
            return
        body = source.read(size + (size & 1))
        if kind == b"fmt ":
            channels = int.from_bytes(body[2:4], "little")
            rate = int.from_bytes(body[4:8], "little")
            width = int.from_bytes(body[14:16], "little")
            if (channels, rate, width) != (1, 16000, 16):
                raise ConfigError(
                    f"{name} is {rate} Hz, {channels} channel(s), {width}-bit: voicenlu listen "
                    "reads 16 kHz mono 16-bit PCM (arecord -r 16000 -f S16_LE -c 1)."
                )
