"""Fetch the SNIPS benchmark files at a pinned commit and verify them by checksum.

The files come over HTTP from GitHub, or from a local copy (``voicenlu data download --from DIR``
or ``VOICENLU_SNIPS_MIRROR``) where there is no network. Every file is checked against the
SHA-256 recorded here before it is moved into place, so a half-written or altered file is
never read as data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from voicenlu.data.snips import ENGINES_DIR, UPSTREAM_COMMIT, UPSTREAM_REPO, engines_dir
from voicenlu.errors import DataError
from voicenlu.hashing import BLOCK, file_sha256

log = logging.getLogger(__name__)

DATA_DIR_ENV = "VOICENLU_DATA_DIR"
MIRROR_ENV = "VOICENLU_SNIPS_MIRROR"
URL_ENV = "VOICENLU_SNIPS_URL"
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/{UPSTREAM_REPO}/{UPSTREAM_COMMIT}"

# SHA-256 of each file at UPSTREAM_COMMIT, relative to the repository root.
FILES: dict[str, str] = {
    "2017-06-custom-intent-engines/AddToPlaylist/train_AddToPlaylist.json": (
        "553197a443cab26ab826dfdd43bd183faaae097c0f656f2bbd80cc116da28c3f"
    ),
    "2017-06-custom-intent-engines/AddToPlaylist/train_AddToPlaylist_full.json": (
        "fee1b4645352e70ed8a40f1f87c3b53fc3bf75f8ebc82252a22b82c107e75b01"
    ),
    "2017-06-custom-intent-engines/AddToPlaylist/validate_AddToPlaylist.json": (
        "14cc9ee49ae477b1452632a6e835498cf4c32da397b16967c82abb3e50403e83"
    ),
    "2017-06-custom-intent-engines/BookRestaurant/train_BookRestaurant.json": (
        "b07de5634d4ecba87428bfbbeec6b14359ba727c92ccb3522238aa5fc6a2ba1a"
    ),
    "2017-06-custom-intent-engines/BookRestaurant/train_BookRestaurant_full.json": (
        "7677e82cd6e9a8191f0a4502568c786278c984900b4796d3628e46f1abf73ef4"
    ),
    "2017-06-custom-intent-engines/BookRestaurant/validate_BookRestaurant.json": (
        "4f7258ccc768b777b2eb8916532db9aa50dbd058ddf1ffb0dc59218963e7442a"
    ),
    "2017-06-custom-intent-engines/GetWeather/train_GetWeather.json": (
        "2b15bd68a5af583dd65b5e20871b9462b8c7ef458016e8115a428c6f7c2b4b97"
    ),
    "2017-06-custom-intent-engines/GetWeather/train_GetWeather_full.json": (
        "86f414b2ad8a993134d85d16e25e5d337beae47cef993c0af2a5f440405c60f6"
    ),
    "2017-06-custom-intent-engines/GetWeather/validate_GetWeather.json": (
        "60c095e193655d6ca92be220fed3926ca25e18cd70c85664145efe25d80993af"
    ),
    "2017-06-custom-intent-engines/PlayMusic/train_PlayMusic.json": (
        "7841351e7bf9f3fb87fc41ce291a02636c51d2a9a4c19c11491fa4cba7a40c3f"
    ),
    "2017-06-custom-intent-engines/PlayMusic/train_PlayMusic_full.json": (
        "901ddbe9781d1fdb8196e789c543f80df3d29ca6e237da64947905adcc0312e4"
    ),
    "2017-06-custom-intent-engines/PlayMusic/validate_PlayMusic.json": (
        "922212775e26259d5bffeaf79b6048d070ca017d229df00b2cc9800f71c75d20"
    ),
    "2017-06-custom-intent-engines/RateBook/train_RateBook.json": (
        "ebc159ffdebbd89a2a1f13ab48b5af4d59f4a647ccf2fb3d962fc06e1114e84d"
    ),
    "2017-06-custom-intent-engines/RateBook/train_RateBook_full.json": (
        "bb43e4b74134300d5766f6b420d0357a63402987a225f6dc92c806c9c040ce04"
    ),
    "2017-06-custom-intent-engines/RateBook/validate_RateBook.json": (
        "c1f8b4114da0bb5e8afd78a8062766e18b2eabb0e717539598db01b09d04619b"
    ),
    "2017-06-custom-intent-engines/SearchCreativeWork/train_SearchCreativeWork.json": (
        "1997aedffa7227fe572e7616dc8ec836f8f8f2447391069ebb59c6491a946425"
    ),
    "2017-06-custom-intent-engines/SearchCreativeWork/train_SearchCreativeWork_full.json": (
        "87b3432de48c71c205aa5238b41d9e3f2d70bdfcd0bea2427544fb9e4bd5e5bb"
    ),
    "2017-06-custom-intent-engines/SearchCreativeWork/validate_SearchCreativeWork.json": (
        "8a5e830eddb185d3e4a9d27ded140a145d04766bdce0e58834676ede32d13e77"
    ),
    "2017-06-custom-intent-engines/SearchScreeningEvent/train_SearchScreeningEvent.json": (
        "7dd079699f1141675a1f4f71c5a4aee7065609198e9470613e566768aae0873d"
    ),
    "2017-06-custom-intent-engines/SearchScreeningEvent/train_SearchScreeningEvent_full.json": (
        "5447e9440c02e2fb08c3ae16b9f58a4d1332b4bc77fd34691402b02aa4399765"
    ),
    "2017-06-custom-intent-engines/SearchScreeningEvent/validate_SearchScreeningEvent.json": (
        "81e1445713e03c7c3e615353c5f3fee05f369fe9834100b9b9735900a96b9498"
    ),
}

_OFFLINE_HINT = (
    "To use a local copy of snipsco/nlu-benchmark instead, run "
    "`voicenlu data download --from DIR` or set VOICENLU_SNIPS_MIRROR=DIR"
)


def default_data_dir() -> Path:
    """Where the data lives unless told otherwise: ``$VOICENLU_DATA_DIR`` or the user cache."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "voicenlu" / f"snips-{UPSTREAM_COMMIT[:7]}"


def verify(root: str | Path) -> list[str]:
    """The relative paths under ``root`` that are missing or fail their checksum."""
    root = Path(root)
    return [rel for rel, sha in FILES.items() if not _matches(root / rel, sha)]


def download(
    dest: str | Path,
    *,
    source: str | Path | None = None,
    base_url: str | None = None,
    timeout: float = 30,
) -> Path:
    """Put the 21 verified benchmark files under ``dest`` and return ``dest``.

    With ``source`` (a local directory), copy from it; otherwise fetch from ``base_url``.
    When neither is given, ``$VOICENLU_SNIPS_MIRROR`` then ``$VOICENLU_SNIPS_URL`` then GitHub
    at the pinned commit are used. Files already present with the right hash are skipped.
    """
    dest = Path(dest)
    if source is None and base_url is None:
        source = os.environ.get(MIRROR_ENV) or None
    if source is not None:
        src_dir = _source_engines_dir(Path(source))
        fetch = _copier(src_dir)
        origin = str(src_dir)
    else:
        url = (base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        fetch = _http_getter(url, timeout)
        origin = url
    todo = verify(dest)
    if not todo:
        log.info("SNIPS data already present and verified in %s", dest)
        return dest
    log.info("fetching %d SNIPS files from %s into %s", len(todo), origin, dest)
    made = _missing_folders(dest, todo)
    try:
        for rel in _progress(todo):
            _install(rel, fetch, dest / rel)
    except BaseException:
        # A failed fetch (no network) leaves no empty folders behind that it made itself.
        for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return dest


def _missing_folders(dest: Path, files: list[str]) -> list[Path]:
    """The folders that installing ``files`` under ``dest`` would create."""
    missing = set()
    for rel in files:
        folder = (dest / rel).parent
        while not folder.exists():
            missing.add(folder)
            folder = folder.parent
    return list(missing)


def ensure_data(data_dir: str | Path | None = None) -> Path:
    """The data root, verified; missing or altered files are fetched first.

    Fetching uses ``$VOICENLU_SNIPS_MIRROR`` when set, else the network, so training and
    evaluation work with no separate download step.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    bad = verify(root)
    if bad:
        log.info("%d of %d SNIPS files missing or altered in %s", len(bad), len(FILES), root)
        download(root)
    return root


def _matches(path: Path, sha: str) -> bool:
    return path.is_file() and file_sha256(path) == sha


def _source_engines_dir(source: Path) -> Path:
    if not source.is_dir():
        raise DataError(
            f"{source}: not a directory; give the folder of a snipsco/nlu-benchmark copy"
        )
    try:
        return engines_dir(source)
    except DataError:
        raise DataError(
            f"{source}: neither {ENGINES_DIR}/ nor its intent folders are here; give the "
            f"snipsco/nlu-benchmark folder or its {ENGINES_DIR}/ folder"
        ) from None


def _copier(src_dir: Path) -> Callable[[str], tuple[BinaryIO, str]]:
    def open_copy(rel: str) -> tuple[BinaryIO, str]:
        path = src_dir / rel.split("/", 1)[1]
        try:
            return path.open("rb"), str(path)
        except OSError as exc:
            raise DataError(
                f"cannot read {path} ({exc.strerror}): the local copy lacks {rel}; "
                "give a complete copy of snipsco/nlu-benchmark"
            ) from None

    return open_copy


def _http_getter(base_url: str, timeout: float) -> Callable[[str], tuple[BinaryIO, str]]:
    def open_url(rel: str) -> tuple[BinaryIO, str]:
        url = f"{base_url}/{rel}"
        try:
            return urllib.request.urlopen(url, timeout=timeout), url
        except urllib.error.HTTPError as exc:
            raise DataError(
                f"HTTP {exc.code} ({exc.reason}) fetching {url}. {_OFFLINE_HINT}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DataError(
                f"could not reach the network to fetch {url} ({reason}). {_OFFLINE_HINT}"
            ) from None

    return open_url


def _install(rel: str, fetch: Callable[[str], tuple[BinaryIO, str]], target: Path) -> None:
    """Stream one file to a temp file beside ``target``, check its hash, then move it in."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".part"
        )
    except OSError as exc:
        raise DataError(
            f"cannot write to {target.parent} ({exc.strerror}); choose a writable data folder "
            "(set VOICENLU_DATA_DIR or give another destination)"
        ) from None
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            stream, origin = fetch(rel)
            try:
                with stream:
                    for block in iter(lambda: stream.read(BLOCK), b""):
                        digest.update(block)
                        out.write(block)
            except OSError as exc:
                raise DataError(
                    f"fetching {rel} from {origin} failed midway ({exc}). {_OFFLINE_HINT}"
                ) from None
        got = digest.hexdigest()
        if got != FILES[rel]:
            raise DataError(
                f"checksum mismatch for {rel} from {origin}: expected sha256 {FILES[rel]}, "
                f"got {got}. The file was refused. The source is corrupted or not "
                f"{UPSTREAM_REPO} at commit {UPSTREAM_COMMIT[:7]}: use a clean copy"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.debug("verified %s", rel)


def _progress(items: list[str]) -> Iterable[str]:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _logged(items)
    return tqdm(items, desc="SNIPS data", unit="file")


def _logged(items: list[str]) -> Iterator[str]:
    for i, rel in enumerate(items, 1):
        log.info("SNIPS data %d/%d: %s", i, len(items), rel)
        yield rel
