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


@pytest.mark.parametrize("piece_bytes", [1, 7, 12, 16, 29, 4096, 1 << 20])
def test_a_blob_sealed_whole_opens_in_pieces_of_any_size(piece_bytes: int) -> None:
    keys = parse_keys(ring("k1"))
    plaintext = os.urandom(10_000)
    blob, key_id = keys.seal(plaintext, "ctx")
    opener = keys.opener(key_id, "ctx")
    opened = b"".join(opener.update(blob[at : at + piece_bytes]) for at in range(0, len(blob), piece_bytes))
    assert opened + opener.finish() == plaintext


def test_a_blob_sealed_in_pieces_opens_whole() -> None:
    keys = parse_keys(ring("k1"))
    plaintext = os.urandom(10_000)
    sealer = keys.sealer("ctx")
    blob = sealer.update(plaintext[:3]) + sealer.update(b"") + sealer.update(plaintext[3:]) + sealer.finish()
    assert keys.open(blob, "k1", "ctx") == plaintext
    empty = keys.sealer("ctx")
    assert keys.open(empty.finish(), "k1", "ctx") == b""


@pytest.mark.parametrize("damage", ["flip a ciphertext bit", "flip a tag bit", "cut the tag", "wrong context"])
def test_opening_in_pieces_detects_tampering_at_the_end(damage: str) -> None:
    keys = parse_keys(ring("k1"))
    blob, _ = keys.seal(os.urandom(1000), "ctx")
    altered, context = bytearray(blob), "ctx"
    if damage == "flip a ciphertext bit":
        altered[100] ^= 0x01
    elif damage == "flip a tag bit":
        altered[-1] ^= 0x80
    elif damage == "cut the tag":
        altered = altered[:-16]
    else:
        context = "other row"
    opener = keys.opener("k1", context)
    opener.update(bytes(altered))
    with pytest.raises(TamperedBlob):
        opener.finish()


def test_opening_with_a_key_that_is_not_configured_names_it() -> None:
    with pytest.raises(ConfigError, match="'k9' is not configured"):
        parse_keys(ring("k1")).opener("k9", "ctx")
