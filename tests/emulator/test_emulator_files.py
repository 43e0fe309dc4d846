"""The deterministic attachment source ``/_emulator/files``."""

from __future__ import annotations

import hashlib

from pipeline.emulator import expected_file_sha256, file_chunks


async def test_file_digest_matches_the_offline_helper(plain) -> None:
    """The served bytes hash to expected_file_sha256, and Content-Length is exact."""
    size = 3 * 1024 * 1024 + 17
    digest = hashlib.sha256()
    received = 0
    async with plain.stream("GET", f"/_emulator/files/{size}/seed-a/report.pdf") as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(size)
        assert 'filename="report.pdf"' in response.headers["content-disposition"]
        async for chunk in response.aiter_bytes():
            digest.update(chunk)
            received += len(chunk)
    assert received == size
    assert digest.hexdigest() == expected_file_sha256(size, "seed-a")


async def test_files_are_deterministic_and_seed_dependent(plain) -> None:
    """Same size and seed give the same bytes; another seed gives others; a prefix is stable."""
    first = (await plain.get("/_emulator/files/1000/7")).content
    again = (await plain.get("/_emulator/files/1000/7")).content
    other = (await plain.get("/_emulator/files/1000/8")).content
    assert first == again != other
    assert len(first) == 1000
    assert b"".join(file_chunks(1000, 7)) == first
    assert expected_file_sha256(0, "x") == hashlib.sha256(b"").hexdigest()


async def test_missing_file_and_fail_first(plain) -> None:
    """Malformed paths are 404; ?fail_first=N answers 503 N times, then serves the file."""
    assert (await plain.get("/_emulator/files/missing")).status_code == 404
    statuses = [(await plain.get("/_emulator/files/10/s?fail_first=2")).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
