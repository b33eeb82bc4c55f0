"""Running the app: settings from the environment for each worker, and uvicorn."""

import ipaddress
import logging
import os
from pathlib import Path

from fastapi import FastAPI

from voicenlu.bundle import read_manifest
from voicenlu.errors import ConfigError
from voicenlu.server.app import API_KEY_ENV, create_app

log = logging.getLogger(__name__)

SETTINGS_ENV = {
    "bundle": "VOICENLU_BUNDLE",
    "cors_origins": "VOICENLU_CORS_ORIGINS",
    "max_chars": "VOICENLU_MAX_CHARS",
    "max_batch": "VOICENLU_MAX_BATCH",
    "microbatch_ms": "VOICENLU_MICROBATCH_MS",
    "threads": "VOICENLU_THREADS",
}


def _env_number(name: str, kind: type, default):
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}.") from None


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` and multi-worker serve(): settings from env vars.

    Each worker process calls it, since a loaded model cannot be handed across processes.
    """
    bundle = os.environ.get(SETTINGS_ENV["bundle"])
    if not bundle:
        raise ConfigError(f"Set {SETTINGS_ENV['bundle']} to the bundle folder to serve.")
    origins = os.environ.get(SETTINGS_ENV["cors_origins"], "")
    return create_app(
        bundle,
        cors_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
        max_chars=_env_number(SETTINGS_ENV["max_chars"], int, 1000),
        max_batch=_env_number(SETTINGS_ENV["max_batch"], int, 256),
        microbatch_ms=_env_number(SETTINGS_ENV["microbatch_ms"], float, 0.0),
        threads=_env_number(SETTINGS_ENV["threads"], int, None),
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    bundle: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    cors_origins: tuple[str, ...] | list[str] = (),
    max_chars: int = 1000,
    max_batch: int = 256,
    microbatch_ms: float = 0.0,
    threads: int | None = None,
    access_log: bool = False,
) -> None:
    """Serve a bundle over HTTP until interrupted (``voicenlu serve``).

    Binds to loopback unless told otherwise. The API key is read from VOICENLU_API_KEY, never
    from the command line, where other users could read it in the process list. Each worker
    runs its model on ``threads`` threads, one by default: under load a second thread cost
    more CPU than it saved (on 2 cores, 4.5-5.5 ms of server CPU per request against 2.6-2.9
    ms with one), so use more cores with more workers. The access log is off by default: a
    line per request adds about a fifth of a parse's CPU time.
    """
    import uvicorn

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}.")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, not {threads}.")
    threads = threads or 1
    if not _is_loopback(host) and not os.environ.get(API_KEY_ENV):
        log.warning(
            "Serving on %s without an API key: anyone who can reach this address can use it. "
            "Set %s to require one.",
            host,
            API_KEY_ENV,
        )
    if workers == 1:
        app = create_app(
            bundle,
            cors_origins=cors_origins,
            max_chars=max_chars,
            max_batch=max_batch,
            microbatch_ms=microbatch_ms,
            threads=threads,
        )
        uvicorn.run(app, host=host, port=port, access_log=access_log)
        return
    # A bad bundle fails once, here, rather than in every worker.
    read_manifest(Path(bundle), verify=False, need=("tokenizer.json",))
    os.environ.update(
        {
            SETTINGS_ENV["bundle"]: str(Path(bundle).resolve()),
            SETTINGS_ENV["cors_origins"]: ",".join(cors_origins),
            SETTINGS_ENV["max_chars"]: str(max_chars),
            SETTINGS_ENV["max_batch"]: str(max_batch),
            SETTINGS_ENV["microbatch_ms"]: str(microbatch_ms),
            SETTINGS_ENV["threads"]: str(threads),
        }
    )
    uvicorn.run(
        "voicenlu.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
    )
