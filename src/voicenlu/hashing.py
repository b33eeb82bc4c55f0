"""SHA-256 of a file, read in blocks: the checksums of bundle files, of the SNIPS download and
of a bundle's training data. Standard library only: the runtime checks bundles with it."""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 16  # bytes read at a time


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
