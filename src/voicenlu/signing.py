"""Ed25519 signatures over a bundle, for deployments that pull bundles from shared storage.

The manifest's digest covers the manifest itself (labels, calibration, settings) and, through
the checksums it records, every file of the bundle; signing that digest with a key only the
operator holds means nobody with write access to the storage alone can swap a bundle in.
The signature lives in ``voicenlu.sig`` beside the manifest. Needs ``voicenlu[sign]``.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from voicenlu.bundle import put_unlisted_text, read_manifest
from voicenlu.errors import BundleError, ConfigError
from voicenlu.extras import missing_extra

SIGNATURE = "voicenlu.sig"
ALGORITHM = "ed25519"


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise missing_extra("sign", "bundle", "cryptography") from None
    return serialization, ed25519, InvalidSignature


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"No {what} at {path}: the file does not exist.") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a {what} file.") from None
    except PermissionError:
        raise ConfigError(f"Cannot read the {what} {path}: permission denied.") from None


def generate_key(private_path: str | Path) -> Path:
    """Write a new private key (PEM, readable by its owner only) and its public key beside it
    (``<name>.pub``); returns the public key's path."""
    serialization, ed25519, _ = _crypto()
    private_path = Path(private_path)
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} already exists: choose another name or remove it.")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_path


def sign_bundle(bundle: str | Path, private_key: str | Path) -> Path:
    """Sign the bundle's manifest digest; write and return ``voicenlu.sig``."""
    serialization, ed25519, _ = _crypto()
    bundle = Path(bundle)
    digest = read_manifest(bundle)["digest"]
    try:
        key = serialization.load_pem_private_key(_read_key_file(private_key, "private key"), None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{private_key} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(
            f"{private_key} is not an Ed25519 key: make one with `voicenlu bundle keygen`."
        )
    signature = base64.b64encode(key.sign(bytes.fromhex(digest))).decode()
    record = {"algorithm": ALGORITHM, "digest": digest, "signature": signature}
    return put_unlisted_text(bundle, SIGNATURE, json.dumps(record, indent=2) + "\n")


def verify_bundle(bundle: str | Path, public_key: str | Path, check_files: bool = True) -> str:
    """Check ``voicenlu.sig`` against the manifest's digest and the public key; return the
    digest. Raises BundleError naming what does not match.

    ``check_files=False`` leaves the files' checksums to whoever reads them (a server checks
    the files it loads, against the same manifest).
    """
    serialization, ed25519, invalid = _crypto()
    bundle = Path(bundle)
    digest = read_manifest(bundle, verify=check_files)["digest"]
    try:
        key = serialization.load_pem_public_key(_read_key_file(public_key, "public key"))
    except ValueError as exc:
        raise ConfigError(f"{public_key} is not a PEM public key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"{public_key} is not an Ed25519 public key.")
    path = bundle / SIGNATURE
    if not path.is_file():
        raise BundleError(
            f"{bundle} is not signed ({SIGNATURE} is missing): sign it with "
            f"`voicenlu bundle sign {bundle} --key KEY`."
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        signature = base64.b64decode(record["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path} is not a voicenlu signature file: {exc}") from None
    try:
        key.verify(signature, bytes.fromhex(digest))
    except invalid:
        raise BundleError(
            f"{path} does not match this bundle and key: the bundle was changed after it was "
            f"signed, or it was signed with another key than {public_key}."
        ) from None
    return digest
