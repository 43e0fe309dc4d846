"""The README's first command: ``mailpipe demo`` runs the whole pipeline on one machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DEMO_TIMEOUT_S = 240


def test_the_demo_backs_up_every_email_from_an_empty_directory(amqp_url: str, tmp_path: Path) -> None:
    # As a newcomer runs it: no database file, the default SQLite URL, the built-in emulator.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MAILPIPE_")},
        "MAILPIPE_AMQP_URL": amqp_url,  # a vhost of its own instead of the shared "/"
        "MAILPIPE_HTTP_PORT": "0",
    }
    mailpipe = Path(sys.executable).with_name("mailpipe")
    done = subprocess.run(
        [str(mailpipe), "demo", "--emails", "10", "--timeout-s", str(DEMO_TIMEOUT_S - 30)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"backed_up\W+10\b", done.stdout), done.stdout[-2000:]
    assert (tmp_path / "mailpipe.db").exists()
