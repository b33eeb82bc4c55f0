"""Settings that decide a run, as validated dataclasses. Standard library only.

The CLI builds its options (and their defaults) from these fields, and the Python API passes
keyword options straight into them, so each default lives here and nowhere else, and a bad
value is refused the same way wherever it comes from: a ``ConfigError`` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from voicenlu.errors import ConfigError

DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
RUNS_DIR = "runs"  # a training run goes to runs/<data name>: TensorBoard logs, bundle/
CHECKPOINTS = "checkpoints"  # in a run folder while it trains; removed once the bundle is written

# User data has no dev set of its own: this share of each intent is held out to choose the
# checkpoint and calibrate (with the run's seed).
DEV_FRACTION = 0.1
# A dev set of fewer utterances per intent than this (on average) cannot choose anything:
# the run then trains on every utterance for a fixed schedule (``min_steps``) instead.
MIN_DEV_PER_INTENT = 5

# `--quick`: one epoch (whatever min_steps says) on a stratified slice, to see the whole
# pipeline work in minutes.
QUICK_EPOCHS = 1.0
QUICK_PER_INTENT = 100

# Experiments that train several models.
OOS_PER_INTENT = 300  # training utterances per intent in each leave-one-intent-out fold
OOS_EPOCHS = 3.0
PRUNE_EPOCHS = 2.0  # distillation epochs that recover a pruned model
# A run of short epochs is scored on dev (and checkpointed) this many times, not every epoch.
EVALUATIONS = 20


def default_output_dir(data: str | Path | None) -> Path:
    """Where a run goes unless told: ``runs/snips`` for the benchmark, ``runs/assistant`` for
    ``assistant.rasa.yml``, so runs on different data never replace each other."""
    name = "snips" if data is None else Path(data).resolve().name.split(".")[0]
    return Path(RUNS_DIR) / (name or "data")


def _option(default, help: str, minimum=None, below=None, above=None):
    """A field with its CLI help and bounds: ``minimum`` <= value, ``above`` < value < ``below``."""
    bounds = {"minimum": minimum, "below": below, "above": above}
    return field(default=default, metadata={"help": help, **bounds})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; stored in the bundle's manifest."""

    backbone: str = _option(
        DEFAULT_BACKBONE, "Hugging Face encoder name or local path (the default ships offline)"
    )
    epochs: float = _option(6.0, "training epochs", above=0)
    batch_size: int = _option(32, "utterances per optimizer step", minimum=1)
    encoder_lr: float = _option(1e-4, "learning rate of the encoder", above=0)
    head_lr: float = _option(1e-3, "learning rate of the intent and slot heads", above=0)
    warmup_ratio: float = _option(
        0.1, "share of steps with a rising learning rate", minimum=0, below=1
    )
    weight_decay: float = _option(0.01, "AdamW weight decay", minimum=0)
    label_smoothing: float = _option(0.0, "label smoothing of both losses", minimum=0, below=1)
    max_length: int = _option(64, "sub-tokens per request (longer ones are truncated)", minimum=8)
    seed: int = _option(13, "random seed (also draws the dev hold-out of your own data)")
    freeze_backbone: bool = _option(
        False, "train the heads only, on frozen pretrained features (the original plan)"
    )
    min_steps: int = _option(
        400,
        "optimizer steps at least: small data trains for more epochs (0: the epochs decide)",
        minimum=0,
    )
    patience: int = _option(
        3, "early stopping: dev evaluations without a better dev score", minimum=1
    )
    keep_checkpoints: int = _option(
        2, "checkpoints kept on disk while training (removed once the bundle is written)", minimum=1
    )
    spoken_copies: bool = _option(
        True,
        "also learn the spoken form (lower case, no punctuation, numbers as words) of each "
        "training utterance whose spoken form differs from it",
    )

    slot_swaps: int = _option(
        4,
        "data too small to fill min_steps in its epochs: add up to this many copies of each "
        "utterance with its slot values swapped for other values of the same slot, no more "
        "than fill the budget (0: none)",
        minimum=0,
    )
    lexical: bool = _option(
        True,
        "add a TF-IDF model's intent evidence to the network's, weighted on dev (0 if dev "
        "prefers the network alone)",
    )
    mean_pooling: bool = _option(
        True, "the intent head reads the mean of the token vectors (else the first token)"
    )
    contrastive_pairs: int = _option(
        0,
        "before the joint training, train the encoder on this many same-intent and "
        "different-intent pairs of training utterances (a contrastive warm start; 0: none)",
        minimum=0,
    )
    crf: bool = _option(
        False, "a CRF layer learns which slot tag follows which (else the tags are independent)"
    )
    quantize: bool = _option(
        True,
        "also write model.int8.onnx (dynamic int8), the model the runtime serves when present",
    )
    segmenter: bool = _option(
        True,
        "learn where a text holding several requests ('turn off the lights and close the "
        "blinds') splits, from joins of the training utterances",
    )

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))
        if self.contrastive_pairs and self.freeze_backbone:
            raise ConfigError(
                "contrastive_pairs (--contrastive-pairs) trains the encoder, which "
                "freeze_backbone (--freeze-backbone) keeps fixed: choose one."
            )

    @classmethod
    def from_options(cls, **options) -> TrainConfig:
        """The config from keyword options, refusing unknown names with the list of known ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ConfigError(
                f"Unknown training option {unknown[0]!r}: choose from {', '.join(names)}."
            )
        return cls(**options)


@dataclass(frozen=True)
class Schedule:
    """How long a run trains and how often it is scored on dev."""

    epochs: float
    steps: int  # optimizer steps in all
    eval_steps: int | None  # score every this many steps; None: after every epoch
    patience: int  # evaluations without a better dev score before stopping


def schedule(config: TrainConfig, n_train: int) -> Schedule:
    """Budget by steps: 70 utterances and 13,000 both train to convergence.

    Epochs grow until ``min_steps`` steps are done. Epochs shorter than a twentieth of the
    run are not each scored: dev is scored ``EVALUATIONS`` times, and patience counts in
    those evaluations (at least a third of them, so a noisy small dev does not stop it early).
    """
    per_epoch = math.ceil(n_train / config.batch_size)
    epochs = max(config.epochs, math.ceil(config.min_steps / per_epoch))
    steps = math.ceil(epochs * per_epoch)
    every = math.ceil(steps / EVALUATIONS)
    if per_epoch >= every:
        return Schedule(epochs, steps, None, config.patience)
    return Schedule(epochs, steps, every, max(config.patience, EVALUATIONS // 3))


def flag(name: str) -> str:
    """The command-line spelling of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def field_type(f: dataclasses.Field) -> type:
    """The Python type of a config field (annotations are strings here)."""
    return _TYPES[str(f.type)]


def _check(f: dataclasses.Field, value) -> None:
    kind = field_type(f)
    name = f"{f.name} ({flag(f.name)})"
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ConfigError(f"{name} must be {kind.__name__}, got {value!r}.")
    if kind is str and not value.strip():
        raise ConfigError(f"{name} must not be empty.")
    if kind in (int, float):
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}.")
        meta = f.metadata
        if meta.get("minimum") is not None and value < meta["minimum"]:
            raise ConfigError(f"{name} must be at least {meta['minimum']}, got {value!r}.")
        if meta.get("above") is not None and value <= meta["above"]:
            raise ConfigError(f"{name} must be more than {meta['above']}, got {value!r}.")
        if meta.get("below") is not None and value >= meta["below"]:
            raise ConfigError(f"{name} must be less than {meta['below']}, got {value!r}.")


AUDIO_SAMPLE_RATE = 16_000  # what the recogniser hears; other rates are refused, not resampled
MAX_AUDIO_SECONDS = 30.0  # one Whisper window; a spoken command is a few seconds
JSON_BYTES_PER_CHAR = 12  # the most a character takes in JSON: a surrogate pair, \ud83d\ude00


def check_service_limits(limits) -> None:
    """Every field of a service's limits in its range, and no recording longer than one
    recogniser window."""
    for f in dataclasses.fields(limits):
        _check(f, getattr(limits, f.name))
    if limits.max_audio_seconds > MAX_AUDIO_SECONDS:
        raise ConfigError(
            f"max_audio_seconds must be at most {MAX_AUDIO_SECONDS:.0f} (one recogniser window)."
        )


@dataclass(frozen=True)
class Limits:
    """What one HTTP worker process accepts: every limit of the service, each with a safe
    default. Times are in seconds, sizes in bytes unless named otherwise. The CLI flags, the
    environment variables each worker reads, /metadata and the table in docs/production.md
    come from here."""

    max_chars: int = _option(1000, "longest text accepted, in characters (422 beyond)", minimum=1)
    max_batch: int = _option(256, "most texts in one /parse/batch request (422 beyond)", minimum=1)
    max_batch_chars: int = _option(
        16_000,
        "most characters in one /parse/batch request, all texts together (422 beyond)",
        minimum=1,
    )
    max_body_bytes: int = _option(
        0,
        "largest request body (413 beyond); 0: room for a maximal batch as JSON, escaped or not",
        minimum=0,
    )
    max_audio_seconds: float = _option(
        15.0,
        "longest recording /parse/audio accepts, in seconds (413 beyond; at most 30)",
        above=0,
    )
    max_audio_bytes: int = _option(
        0,
        "largest /parse/audio body (413 beyond); 0: room for max_audio_seconds of 16 kHz WAV",
        minimum=0,
    )
    max_header_bytes: int = _option(
        16_384, "request line and headers together (431 beyond)", minimum=256
    )
    max_headers: int = _option(64, "most header fields in one request (431 beyond)", minimum=1)
    header_timeout: float = _option(
        10.0,
        "time from connecting (or from a request's first byte) to its last header (408)",
        above=0,
    )
    body_timeout: float = _option(
        10.0, "time to receive a whole request body (408 beyond)", above=0
    )
    max_connections: int = _option(
        512,
        "open connections; past it new ones get 503 with Retry-After as soon as they ask",
        minimum=1,
    )
    max_inflight: int = _option(
        64,
        "requests admitted to parse at once; past it 503 with Retry-After, before the body",
        minimum=1,
    )
    keepalive_timeout: float = _option(
        5.0, "an idle keep-alive connection is closed after this", above=0
    )
    shutdown_timeout: float = _option(
        10.0,
        "on SIGTERM, in-flight requests get this long, then their connections are closed",
        above=0,
    )
    retry_after: int = _option(
        1, "seconds a 503 asks the client to wait (Retry-After header)", minimum=0
    )

    def __post_init__(self):
        check_service_limits(self)

    # The two body sizes are derived when 0, on every read rather than stored, so that a copy
    # with other text limits (dataclasses.replace, a CLI flag) derives them anew.
    @property
    def body_bytes(self) -> int:
        """The largest request body: max_body_bytes, or room for a full batch of maximal texts
        at 12 bytes a character (a character beyond the BMP written as a JSON escape pair,
        \\ud83d\\ude00; as UTF-8 it takes 4) plus framing, so a text within the character
        limits always fits, however it is written."""
        if self.max_body_bytes:
            return self.max_body_bytes
        room = min(self.max_batch * self.max_chars, self.max_batch_chars)
        return JSON_BYTES_PER_CHAR * room + 16 * self.max_batch + 1024

    @property
    def audio_bytes(self) -> int:
        """The largest /parse/audio body: max_audio_bytes, or max_audio_seconds of 16-bit
        samples at the recogniser's rate plus room for the WAV header and framing."""
        if self.max_audio_bytes:
            return self.max_audio_bytes
        return int(2 * AUDIO_SAMPLE_RATE * self.max_audio_seconds) + 65_536

    def asdict(self) -> dict:
        """Every limit as it applies (the derived body sizes in place of 0)."""
        derived = {"max_body_bytes": self.body_bytes, "max_audio_bytes": self.audio_bytes}
        return dataclasses.asdict(self) | derived

    @staticmethod
    def env_name(name: str) -> str:
        return f"VOICENLU_{name.upper()}"

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables, for worker processes."""
        return {self.env_name(k): str(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_env(cls, environ=os.environ) -> Limits:
        """Limits from VOICENLU_<NAME> variables; unset ones keep their defaults."""
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(cls.env_name(f.name), "").strip()
            if not raw:
                continue
            kind = field_type(f)
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ConfigError(
                    f"{cls.env_name(f.name)}={raw!r} is not a valid {kind.__name__}."
                ) from None
        return cls(**values)


WYOMING_URI = "tcp://127.0.0.1:10300"  # where `voicenlu wyoming` listens by default


@dataclass(frozen=True)
class WyomingLimits:
    """What the Wyoming service accepts (``voicenlu wyoming``), each with a safe default."""

    max_chars: int = _option(
        Limits.max_chars, "longest text accepted, in characters (an error event beyond)", minimum=1
    )
    max_audio_seconds: float = _option(
        Limits.max_audio_seconds,
        "longest audio stream, in seconds (an error event beyond; at most 30)",
        above=0,
    )
    max_event_bytes: int = _option(
        1 << 20,
        "largest event data and payload, in bytes (the connection is closed beyond)",
        minimum=1024,
    )
    idle_timeout: float = _option(
        60.0, "seconds a connection may wait between events before it is closed", above=0
    )
    max_connections: int = _option(
        64, "open connections; past it new ones get an error event and are closed", minimum=1
    )

    def __post_init__(self):
        check_service_limits(self)
