"""Data sources -> ``Utterance`` records; the SNIPS benchmark, its download and its split.

Only the standard library is imported here, so reading data needs no ML stack.
"""

from voicenlu.data.download import FILES, default_data_dir, download, ensure_data, verify
from voicenlu.data.records import SlotSpan, Utterance
from voicenlu.data.snips import (
    INTENTS,
    UPSTREAM_COMMIT,
    FileRead,
    SnipsData,
    StatsRow,
    decode_json_bytes,
    format_stats,
    load_small_train,
    load_snips,
    read_benchmark_file,
    stats,
    stratified_slice,
)

__all__ = [
    "FILES",
    "INTENTS",
    "UPSTREAM_COMMIT",
    "FileRead",
    "SlotSpan",
    "SnipsData",
    "StatsRow",
    "Utterance",
    "decode_json_bytes",
    "default_data_dir",
    "download",
    "ensure_data",
    "format_stats",
    "load_small_train",
    "load_snips",
    "read_benchmark_file",
    "stats",
    "stratified_slice",
    "verify",
]
