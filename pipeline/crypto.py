"""Encryption at rest for backups: AES-256-GCM with a key id on every row.

Keys come from ``MAILPIPE_ENCRYPTION_KEYS`` (or the file named by
``MAILPIPE_ENCRYPTION_KEYS_FILE``): comma-separated ``key_id:base64(32 bytes)`` pairs. The
first key seals new data; every listed key can open old data, so a rotation is: put the new
key first, keep the old one, run ``mailpipe keys rotate``, then drop the old key.

A sealed blob is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``. The associated data
binds the blob to its row (the Graph message id), so a blob copied onto another row, or any
flipped bit, fails to open with :class:`TamperedBlob` instead of yielding wrong mail.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.errors import ConfigError, MailpipeError
from pipeline.settings import Settings

__all__ = ["AES_GCM", "KeyRing", "TamperedBlob", "load_keyring"]

AES_GCM = "aes-256-gcm"
NONCE_BYTES = 12


class TamperedBlob(MailpipeError):
    """Raised when a sealed blob fails authentication: altered, truncated or on the wrong row."""

    reason = "tampered"


@dataclass(frozen=True)
class KeyRing:
    """Named 256-bit keys; ``current`` seals, all open."""

    keys: dict[str, bytes]
    current: str

    def seal(self, plaintext: bytes, context: str) -> tuple[bytes, str]:
        """Encrypt ``plaintext`` bound to ``context``; returns the blob and the key id used."""
        nonce = os.urandom(NONCE_BYTES)
        blob = nonce + AESGCM(self.keys[self.current]).encrypt(nonce, plaintext, context.encode())
        return blob, self.current

    def open(self, blob: bytes, key_id: str, context: str) -> bytes:
        """Decrypt a blob sealed with ``key_id`` for ``context``; :class:`TamperedBlob` if it was altered."""
        key = self.keys.get(key_id)
        if key is None:
            raise ConfigError(f"encryption key {key_id!r} is not configured (MAILPIPE_ENCRYPTION_KEYS)")
        try:
            return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode())
        except InvalidTag as exc:
            raise TamperedBlob(f"authentication failed for a blob sealed with key {key_id!r}") from exc


def parse_keys(text: str) -> KeyRing:
    keys: dict[str, bytes] = {}
    order: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key_id, sep, encoded = item.partition(":")
        if not sep or not key_id:
            raise ConfigError("MAILPIPE_ENCRYPTION_KEYS: each entry must be key_id:base64key")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"MAILPIPE_ENCRYPTION_KEYS: key {key_id!r} is not valid base64") from exc
        if len(key) != 32:
            raise ConfigError(f"MAILPIPE_ENCRYPTION_KEYS: key {key_id!r} must be 32 bytes, got {len(key)}")
        keys[key_id] = key
        order.append(key_id)
    if not order:
        raise ConfigError("MAILPIPE_ENCRYPTION_KEYS is empty")
    return KeyRing(keys, order[0])


def load_keyring(settings: Settings) -> KeyRing | None:
    """The configured key ring, or None when encryption is not configured."""
    if settings.encryption_keys is not None:
        return parse_keys(settings.encryption_keys.get_secret_value())
    if settings.encryption_keys_file is not None:
        try:
            return parse_keys(settings.encryption_keys_file.read_text())
        except OSError as exc:
            raise ConfigError(f"MAILPIPE_ENCRYPTION_KEYS_FILE: cannot read {settings.encryption_keys_file}") from exc
    return None
