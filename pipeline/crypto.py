"""Encryption at rest for backups: AES-256-GCM with a key id on every row.

Keys come from ``MAILPIPE_ENCRYPTION_KEYS`` (or the file named by
``MAILPIPE_ENCRYPTION_KEYS_FILE``): comma-separated ``key_id:base64(32 bytes)`` pairs. The
first key seals new data; every listed key can open old data, so a rotation is: put the new
key first, keep the old one, run ``mailpipe keys rotate``, then drop the old key.

A sealed blob is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``. The associated data
binds the blob to its row (the Graph message id), so a blob copied onto another row, or any
flipped bit, fails to open with :class:`TamperedBlob` instead of yielding wrong mail.

:meth:`KeyRing.sealer` and :meth:`KeyRing.opener` do the same in pieces, for data too large to
hold at once; their blobs and :meth:`KeyRing.seal`'s are interchangeable. An opener hands out
plaintext before the tag at the end is checked: its caller must discard everything it got if
:meth:`BlobOpener.finish` raises.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import AEADDecryptionContext, Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.errors import ConfigError, MailpipeError
from pipeline.settings import Settings

__all__ = ["AES_GCM", "BlobOpener", "BlobSealer", "KeyRing", "TamperedBlob", "load_keyring"]

AES_GCM = "aes-256-gcm"
NONCE_BYTES = 12
TAG_BYTES = 16


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

    def sealer(self, context: str) -> BlobSealer:
        """Seal a blob in pieces with the current key (see the module docstring)."""
        return BlobSealer(self.keys[self.current], context)

    def opener(self, key_id: str, context: str) -> BlobOpener:
        """Open a blob sealed with ``key_id`` for ``context`` in pieces."""
        key = self.keys.get(key_id)
        if key is None:
            raise ConfigError(f"encryption key {key_id!r} is not configured (MAILPIPE_ENCRYPTION_KEYS)")
        return BlobOpener(key, key_id, context)


class BlobSealer:
    """``update`` returns the blob's next bytes (the nonce first); ``finish`` returns the last ones."""

    def __init__(self, key: bytes, context: str) -> None:
        self._nonce = os.urandom(NONCE_BYTES)
        self._encryptor = Cipher(algorithms.AES(key), modes.GCM(self._nonce)).encryptor()
        self._encryptor.authenticate_additional_data(context.encode())
        self._started = False

    def update(self, plaintext: bytes) -> bytes:
        """The ciphertext of ``plaintext``, after the nonce if this is the first call."""
        ciphertext = self._encryptor.update(plaintext)
        if self._started:
            return ciphertext
        self._started = True
        return self._nonce + ciphertext

    def finish(self) -> bytes:
        """The blob's last bytes: the tag (after the nonce if nothing was sealed)."""
        head = self.update(b"")
        return head + self._encryptor.finalize() + self._encryptor.tag


class BlobOpener:
    """Opens a blob fed in pieces of any size; the tag is checked by :meth:`finish`."""

    def __init__(self, key: bytes, key_id: str, context: str) -> None:
        self._key, self._key_id, self._context = key, key_id, context
        self._decryptor: AEADDecryptionContext | None = None
        #: Bytes held back: the nonce until it is complete, then the last 16 (maybe the tag).
        self._pending = b""

    def update(self, blob_piece: bytes) -> bytes:
        """The plaintext of the next piece (not yet authenticated)."""
        data = self._pending + blob_piece
        if self._decryptor is None:
            if len(data) < NONCE_BYTES:
                self._pending = data
                return b""
            nonce, data = data[:NONCE_BYTES], data[NONCE_BYTES:]
            self._decryptor = Cipher(algorithms.AES(self._key), modes.GCM(nonce)).decryptor()
            self._decryptor.authenticate_additional_data(self._context.encode())
        cut = max(0, len(data) - TAG_BYTES)
        self._pending = data[cut:]
        return self._decryptor.update(data[:cut]) if cut else b""

    def finish(self) -> bytes:
        """The last plaintext bytes; :class:`TamperedBlob` if the blob was altered or cut short."""
        if self._decryptor is None or len(self._pending) < TAG_BYTES:
            raise TamperedBlob(f"a blob sealed with key {self._key_id!r} is too short to hold its tag")
        try:
            return bytes(self._decryptor.finalize_with_tag(self._pending))
        except InvalidTag as exc:
            raise TamperedBlob(f"authentication failed for a blob sealed with key {self._key_id!r}") from exc


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
