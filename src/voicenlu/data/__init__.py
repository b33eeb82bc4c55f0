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
    holdout,
    load_small_train,
    load_snips,
    read_benchmark_file,
    stats,
    stratified_slice,
)
from voicenlu.data.types import DIMENSIONS, CustomEntity, SlotTypes, snips_benchmark_types

__all__ = [
    "DIMENSIONS",
    "FILES",
    "INTENTS",
    "UPSTREAM_COMMIT",
    "CustomEntity",
    "FileRead",
    "SlotSpan",
    "SlotTypes",
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
    "snips_benchmark_types",
    "stats",
    "holdout",
    "stratified_slice",
    "verify",
]

# User data formats and the validator. `validate` itself stays in voicenlu.data.validate: exporting
# it here would shadow that submodule's name.
from voicenlu.data.formats import (  # noqa: E402
    FORMATS,
    Conversion,
    Dataset,
    FormatError,
    Problem,
    convert,
    detect_format,
    format_for_path,
    load_dataset,
    write_dataset,
)
from voicenlu.data.validate import format_problems, validate_path  # noqa: E402

__all__ += [
    "FORMATS",
    "Conversion",
    "Dataset",
    "FormatError",
    "Problem",
    "convert",
    "detect_format",
    "format_for_path",
    "format_problems",
    "load_dataset",
    "validate_path",
    "write_dataset",
]
