"""Backups are sealed with AES-256-GCM; tampering and wrong rows are detected."""

from __future__ import annotations

import base64
import os

import pytest

from pipeline.crypto import TamperedBlob, parse_keys
from pipeline.errors import ConfigError


def ring(*ids: str) -> str:
    return ",".join(f"{i}:{base64.b64encode(os.urandom(32)).decode()}" for i in ids)


def test_sealed_blob_opens_with_its_key_and_context() -> None:
    keys = parse_keys(ring("k1"))
    blob, key_id = keys.seal(b"MIME", "mailpipe-backup:abc")
    assert key_id == "k1"
    assert b"MIME" not in blob
    assert keys.open(blob, key_id, "mailpipe-backup:abc") == b"MIME"


def test_a_flipped_bit_is_detected() -> None:
    keys = parse_keys(ring("k1"))
    blob, key_id = keys.seal(b"MIME" * 100, "ctx")
    tampered = bytearray(blob)
    tampered[40] ^= 0x01
    with pytest.raises(TamperedBlob):
        keys.open(bytes(tampered), key_id, "ctx")


def test_a_blob_moved_to_another_row_is_detected() -> None:
    keys = parse_keys(ring("k1"))
    blob, key_id = keys.seal(b"MIME", "mailpipe-backup:row-1")
    with pytest.raises(TamperedBlob):
        keys.open(blob, key_id, "mailpipe-backup:row-2")


def test_the_first_key_seals_and_older_keys_still_open() -> None:
    text = ring("new", "old")
    old_only = parse_keys(text.split(",")[1])
    blob, _ = old_only.seal(b"x", "c")
    both = parse_keys(text)
    assert both.current == "new"
    assert both.open(blob, "old", "c") == b"x"


@pytest.mark.parametrize("bad", ["", "nokey", "k:not-base64!", f"k:{base64.b64encode(b'short').decode()}"])
def test_bad_key_configuration_names_the_setting(bad: str) -> None:
    with pytest.raises(ConfigError, match="MAILPIPE_ENCRYPTION_KEYS"):
        parse_keys(bad)
