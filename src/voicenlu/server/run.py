"""Running the app: settings from the environment for each worker, and uvicorn with limits."""

import functools
import ipaddress
import logging
import os
import tempfile
from pathlib import Path

from fastapi import FastAPI

from voicenlu.bundle import read_manifest
from voicenlu.config import Limits
from voicenlu.errors import ConfigError
from voicenlu.server.app import API_KEY_ENV, create_app, limits_with
from voicenlu.server.limits import LimitedHttpProtocol
from voicenlu.server.metrics import MULTIPROC_ENV
from voicenlu.values import DEFAULT_TIMEZONE

log = logging.getLogger(__name__)

# Settings besides the limits (which are VOICENLU_<LIMIT NAME>, see Limits.from_env).
SETTINGS_ENV = {
    "bundle": "VOICENLU_BUNDLE",
    "cors_origins": "VOICENLU_CORS_ORIGINS",
    "microbatch_ms": "VOICENLU_MICROBATCH_MS",
    "threads": "VOICENLU_THREADS",
    "timezone": "VOICENLU_TIMEZONE",
    "digest": "VOICENLU_BUNDLE_DIGEST",
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
        limits=Limits.from_env(),
        microbatch_ms=_env_number(SETTINGS_ENV["microbatch_ms"], float, 0.0),
        threads=_env_number(SETTINGS_ENV["threads"], int, None),
        timezone=os.environ.get(SETTINGS_ENV["timezone"]) or DEFAULT_TIMEZONE,
        digest=os.environ.get(SETTINGS_ENV["digest"]) or None,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# uvicorn kills a worker that misses a 5 s health check; one loading its model on a busy
# host can miss it, be restarted, miss it again, and never serve.
WORKER_HEALTHCHECK_S = 60


def uvicorn_settings(limits: Limits) -> dict:
    """The uvicorn options that enforce ``limits`` at the connection level."""
    return {
        "http": functools.partial(LimitedHttpProtocol, limits=limits),
        "timeout_keep_alive": limits.keepalive_timeout,
        "timeout_graceful_shutdown": limits.shutdown_timeout,
        "timeout_worker_healthcheck": WORKER_HEALTHCHECK_S,
    }


def serve(
    bundle: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    cors_origins: tuple[str, ...] | list[str] = (),
    microbatch_ms: float = 0.0,
    threads: int | None = None,
    access_log: bool = False,
    limits: Limits | None = None,
    timezone: str = DEFAULT_TIMEZONE,
    require_signature: str | Path | None = None,
    **limit_fields,
) -> None:
    """Serve a bundle over HTTP until interrupted (``voicenlu serve``).

    Binds to loopback unless told otherwise. The API key is read from VOICENLU_API_KEY, never
    from the command line, where other users could read it in the process list. Each worker
    runs its model on ``threads`` threads, one by default: under load a second thread cost
    more CPU than it saved (on 2 cores, 4.5-5.5 ms of server CPU per request against 2.6-2.9
    ms with one), so use more cores with more workers. The access log is off by default: a
    line per request adds about a fifth of a parse's CPU time. ``limits`` (or its fields by
    name) apply to each worker. ``timezone`` gives resolved times to requests that name none.
    With ``require_signature`` (a public key), the bundle must
    carry a valid signature by its private key (``voicenlu bundle sign``), and every worker
    loads exactly the manifest that was checked.
    """
    import uvicorn

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}.")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, not {threads}.")
    threads = threads or 1
    limits = limits_with(limits, limit_fields)
    if not _is_loopback(host) and not os.environ.get(API_KEY_ENV):
        log.warning(
            "Serving on %s without an API key: anyone who can reach this address can use it. "
            "Set %s to require one.",
            host,
            API_KEY_ENV,
        )
    digest = None
    if require_signature:
        from voicenlu.signing import verify_bundle

        digest = verify_bundle(bundle, require_signature, check_files=False)
    options = {"host": host, "port": port, "access_log": access_log, **uvicorn_settings(limits)}
    if workers == 1:
        app = create_app(
            bundle,
            cors_origins=cors_origins,
            limits=limits,
            microbatch_ms=microbatch_ms,
            threads=threads,
            timezone=timezone,
            digest=digest,
        )
        uvicorn.run(app, **options)
        return
    # A bad bundle fails once, here, rather than in every worker.
    read_manifest(Path(bundle), verify=False, need=("tokenizer.json",))
    os.environ.update(
        {
            SETTINGS_ENV["bundle"]: str(Path(bundle).resolve()),
            SETTINGS_ENV["cors_origins"]: ",".join(cors_origins),
            SETTINGS_ENV["microbatch_ms"]: str(microbatch_ms),
            SETTINGS_ENV["threads"]: str(threads),
            SETTINGS_ENV["timezone"]: timezone,
            SETTINGS_ENV["digest"]: digest or "",
            **limits.to_env(),
        }
    )
    with tempfile.TemporaryDirectory(prefix="voicenlu-metrics-") as shared:
        # The workers write their metrics here, so one scrape adds up all of them.
        os.environ.setdefault(MULTIPROC_ENV, shared)
        uvicorn.run("voicenlu.server:app_from_env", factory=True, workers=workers, **options)
