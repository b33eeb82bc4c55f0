"""Running the app: its settings (arguments, else environment, else defaults), the bundle
checked before the port is bound, and uvicorn with limits, for one worker or several."""

import functools
import ipaddress
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from fastapi import FastAPI

from voicenlu.bundle import read_manifest
from voicenlu.config import Limits
from voicenlu.errors import BundleError, ConfigError
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
# Model threads per worker: under load a second thread cost more CPU than it saved (on 2
# cores, 4.5-5.5 ms of server CPU per request against 2.6-2.9 ms with one), so use more
# cores with more workers.
DEFAULT_THREADS = 1


def _env_number(environ, name: str, kind: type):
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}.") from None


def settings(environ=None, limits: Limits | None = None, **given) -> dict:
    """The server's settings: each one ``given`` (and not None), else its ``VOICENLU_*``
    environment variable, else its default. ``limits`` given replace the environment's.

    ``voicenlu serve``, its workers and ``uvicorn --factory`` all read them here.
    """
    environ = os.environ if environ is None else environ
    env = SETTINGS_ENV
    origins = environ.get(env["cors_origins"], "")
    found = {
        "bundle": environ.get(env["bundle"]) or None,
        "cors_origins": tuple(o.strip() for o in origins.split(",") if o.strip()),
        "microbatch_ms": _env_number(environ, env["microbatch_ms"], float),
        "threads": _env_number(environ, env["threads"], int),
        "timezone": environ.get(env["timezone"], "").strip() or None,
        "digest": environ.get(env["digest"]) or None,
    }
    defaults = {"microbatch_ms": 0.0, "threads": DEFAULT_THREADS, "timezone": DEFAULT_TIMEZONE}
    chosen = {}
    for name, value in found.items():
        if given.get(name) not in (None, ()):
            value = given[name]
        chosen[name] = defaults.get(name) if value is None else value
    if chosen["threads"] < 1:
        raise ConfigError(f"--threads must be at least 1, not {chosen['threads']}.")
    chosen["cors_origins"] = tuple(chosen["cors_origins"])
    chosen["limits"] = limits if limits is not None else Limits.from_env(environ)
    return chosen


def settings_env(chosen: dict) -> dict[str, str]:
    """``chosen`` settings as the environment variables ``settings`` reads back."""
    env = {
        SETTINGS_ENV[name]: ",".join(value) if name == "cors_origins" else str(value or "")
        for name, value in chosen.items()
        if name in SETTINGS_ENV
    }
    return env | chosen["limits"].to_env()


def _app(chosen: dict) -> FastAPI:
    if not chosen["bundle"]:
        raise ConfigError(f"Set {SETTINGS_ENV['bundle']} to the bundle folder to serve.")
    return create_app(
        chosen["bundle"],
        cors_origins=chosen["cors_origins"],
        limits=chosen["limits"],
        microbatch_ms=chosen["microbatch_ms"],
        threads=chosen["threads"],
        timezone=chosen["timezone"],
        digest=chosen["digest"],
    )


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory``: settings from ``VOICENLU_*`` variables."""
    return _app(settings())


def worker_app() -> FastAPI:
    """The app factory each worker of ``serve(workers=N)`` runs.

    The parent checked the bundle before it started any worker; a worker that still cannot
    load says why in one line and exits with uvicorn's startup-failure status, which stops
    the service (uvicorn would otherwise start it again and again).
    """
    from uvicorn.config import STARTUP_FAILURE

    try:
        return app_from_env()
    except Exception as exc:
        print(f"error: worker {os.getpid()} could not start: {exc}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)


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
# uvicorn cancels what is still running this long after the protocol closed its connections
# at the shutdown deadline, time for the app to see its clients gone and stop cleanly (a
# task uvicorn cancels is answered 500 and logged with a traceback).
SHUTDOWN_GRACE_S = 2


def uvicorn_settings(limits: Limits) -> dict:
    """The uvicorn options that enforce ``limits`` at the connection level."""
    return {
        "http": functools.partial(LimitedHttpProtocol, limits=limits),
        "timeout_keep_alive": limits.keepalive_timeout,
        "timeout_graceful_shutdown": limits.shutdown_timeout + SHUTDOWN_GRACE_S,
        "timeout_worker_healthcheck": WORKER_HEALTHCHECK_S,
    }


def check_bundle(bundle: str | Path, require_signature: str | Path | None) -> str:
    """Everything about the bundle that can be checked without loading its model: every
    file's checksum, the signature when one is required, and ``speech.json``. Returns the
    manifest digest every worker must then load."""
    from voicenlu.speech import read_settings

    if require_signature:
        from voicenlu.signing import verify_bundle

        digest = verify_bundle(bundle, require_signature)
    else:
        digest = read_manifest(bundle)["digest"]
    manifest = read_manifest(bundle, verify=False)
    if manifest["digest"] != digest:
        raise BundleError(f"{bundle}: the manifest changed while it was checked; start again.")
    read_settings(Path(bundle), manifest)
    return digest


def serve(
    bundle: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    cors_origins: tuple[str, ...] | list[str] | None = None,
    microbatch_ms: float | None = None,
    threads: int | None = None,
    access_log: bool = False,
    limits: Limits | None = None,
    timezone: str | None = None,
    require_signature: str | Path | None = None,
    **limit_fields,
) -> None:
    """Serve a bundle over HTTP until interrupted (``voicenlu serve``).

    Binds to loopback unless told otherwise. The API key is read from VOICENLU_API_KEY, never
    from the command line, where other users could read it in the process list. Settings
    left None come from their ``VOICENLU_*`` variables, else their defaults (``settings``);
    ``limits`` (else the environment's) with its fields named in ``limit_fields`` replaced
    apply to each worker. Each worker runs its model on ``threads`` threads (one by default).
    The access log is off by default: a line per request adds about a fifth of a parse's
    CPU time. ``timezone`` gives resolved times to requests that name none.

    Before the port is bound, the whole bundle is checked (every file's checksum, the
    signature by ``require_signature``'s private key when given, ``speech.json``) and its
    model loaded and run once at its full length; every worker then loads exactly the
    manifest that was checked, and a worker that cannot start stops the service with an
    error rather than being started again.
    """
    import uvicorn

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}.")
    base = limits if limits is not None else Limits.from_env()
    chosen = settings(
        limits=limits_with(base, limit_fields),
        bundle=str(bundle),
        cors_origins=tuple(cors_origins or ()),
        microbatch_ms=microbatch_ms,
        threads=threads,
        timezone=timezone,
    )
    if not _is_loopback(host) and not os.environ.get(API_KEY_ENV):
        log.warning(
            "Serving on %s without an API key: anyone who can reach this address can use it. "
            "Set %s to require one.",
            host,
            API_KEY_ENV,
        )
    chosen["digest"] = check_bundle(bundle, require_signature)
    app = _app(chosen)  # loads the model as every worker will
    options = {"host": host, "port": port, "access_log": access_log}
    options |= uvicorn_settings(chosen["limits"])
    if workers == 1:
        uvicorn.run(app, **options)
        return
    del app
    chosen["bundle"] = str(Path(bundle).resolve())
    os.environ.update(settings_env(chosen))
    with tempfile.TemporaryDirectory(prefix="voicenlu-metrics-") as shared:
        # The workers write their metrics here, so one scrape adds up all of them.
        os.environ.setdefault(MULTIPROC_ENV, shared)
        stopped_by = _supervise(
            uvicorn.Config(
                worker_app.__module__ + ":worker_app", factory=True, workers=workers, **options
            )
        )
    if stopped_by is not None:
        signal.raise_signal(stopped_by)  # exit as the signal would have: the documented status


def _supervise(config) -> int | None:
    """Run uvicorn's worker supervisor; return the signal that stopped it, if any.

    A worker that fails to start stops the service with a BundleError, not a restart loop.
    """
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors.multiprocess import SIGNALS, Multiprocess

    class Supervisor(Multiprocess):
        stopped_by = None

        def handle_int(self) -> None:
            self.stopped_by = signal.SIGINT
            super().handle_int()

        def handle_term(self) -> None:
            self.stopped_by = signal.SIGTERM
            super().handle_term()

    handlers = {sig: signal.getsignal(sig) for sig in SIGNALS}
    sock = config.bind_socket()
    try:
        supervisor = Supervisor(config, sockets=[sock])
        supervisor.run()
    finally:
        sock.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        raise BundleError("A worker could not start (its error is above); the service stopped.")
    return supervisor.stopped_by
