"""``voicenlu serve`` (HTTP) and ``voicenlu wyoming`` (Home Assistant): the two services."""

from __future__ import annotations

from voicenlu.cli.common import add_limit_flags, chosen_limits
from voicenlu.config import WYOMING_URI, WyomingLimits
from voicenlu.extras import require_extra
from voicenlu.values import DEFAULT_TIMEZONE


def add_commands(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="HTTP service: /parse, /parse/batch, Rasa-compatible /model/parse, demo page at /",
        description="Serves a bundle's ONNX model (int8 when present) with FastAPI/uvicorn. "
        "Set VOICENLU_API_KEY to require `Authorization: Bearer <key>` on every endpoint but "
        "/health. The OpenAPI description is at /openapi.json, Prometheus metrics at /metrics.",
    )
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes, each loading the model once; one per core serves the most requests",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="allow this browser origin (repeatable; default: VOICENLU_CORS_ORIGINS, "
        "comma-separated)",
    )
    p.add_argument(
        "--microbatch-ms",
        type=float,
        help="group concurrent /parse requests into one model run: those waiting when the "
        "model frees up plus those arriving within this window (default: "
        "VOICENLU_MICROBATCH_MS, else 0: off)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="model threads per worker (default: VOICENLU_THREADS, else 1; to use more "
        "cores, add workers)",
    )
    p.add_argument("--access-log", action="store_true", help="log a line per request")
    p.add_argument(
        "--timezone",
        metavar="NAME",
        help="IANA time zone of resolved times when a request names none (default: "
        f"VOICENLU_TIMEZONE, else {DEFAULT_TIMEZONE})",
    )
    p.add_argument(
        "--require-signature",
        metavar="PUBLIC_KEY",
        help="serve only a bundle signed with this key's private half (`voicenlu bundle sign`)",
    )
    add_limit_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "wyoming",
        help="Wyoming service (speech to text and intents) for Home Assistant; needs "
        "voicenlu[wyoming]",
        description="Serves a bundle over the Wyoming protocol: `describe`, `transcript` or "
        "`recognize` -> `intent` / `not-recognized`, and audio streams -> `transcript` and the "
        "intent. Add it in Home Assistant as a Wyoming Protocol integration (host and port of "
        "--uri); see docs/home-assistant.md.",
    )
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("--uri", default=WYOMING_URI, help="where to listen (default: %(default)s)")
    p.add_argument("--threads", type=int, help="model threads (default: one per core)")
    add_limit_flags(p, WyomingLimits, "limits")
    p.set_defaults(func=cmd_wyoming)


def cmd_serve(args) -> int:
    require_extra("serve", "serve")
    from voicenlu.server import serve

    serve(
        args.bundle,
        host=args.host,
        port=args.port,
        workers=args.workers,
        cors_origins=args.cors_origin,
        microbatch_ms=args.microbatch_ms,
        threads=args.threads,
        access_log=args.access_log,
        timezone=args.timezone,
        require_signature=args.require_signature,
        **chosen_limits(args),
    )
    return 0


def cmd_wyoming(args) -> int:
    require_extra("wyoming", "wyoming")
    from voicenlu.wyoming import serve

    limits = WyomingLimits(**chosen_limits(args, WyomingLimits))
    serve(args.bundle, uri=args.uri, limits=limits, threads=args.threads)
    return 0
