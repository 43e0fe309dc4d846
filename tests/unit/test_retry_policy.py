"""Each step's retry policy: its own attempts, its own delays when configured, else the defaults."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.retry import retry_policy
from pipeline.settings import load_settings


def test_each_step_takes_its_own_max_attempts() -> None:
    settings = load_settings(send_max_attempts=2, upload_max_attempts=3, backup_max_attempts=4, download_max_attempts=5)
    attempts = {step: retry_policy(settings, step).max_attempts for step in ("send", "upload", "backup", "download")}
    assert attempts == {"send": 2, "upload": 3, "backup": 4, "download": 5}


def test_a_step_with_its_own_delays_uses_them_and_the_others_keep_the_defaults() -> None:
    settings = load_settings(retry_base_delay_s=1.0, retry_max_delay_s=60.0, retry_delays_s={"upload": (5.0, 600.0)})
    upload, send = retry_policy(settings, "upload"), retry_policy(settings, "send")
    assert (upload.base_delay_s, upload.max_delay_s) == (5.0, 600.0)
    assert (send.base_delay_s, send.max_delay_s) == (1.0, 60.0)


def test_per_step_delays_are_read_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILPIPE_RETRY_DELAYS_S", '{"download": [0.5, 30]}')
    policy = retry_policy(load_settings(), "download")
    assert (policy.base_delay_s, policy.max_delay_s) == (0.5, 30.0)


@pytest.mark.parametrize(
    ("value", "named"),
    [({"upload": (10.0, 5.0)}, "upload"), ({"send": (0.0, 5.0)}, "send"), ({"drafts": (1.0, 2.0)}, "drafts")],
)
def test_bad_per_step_delays_are_refused_naming_the_step(value: dict[str, tuple[float, float]], named: str) -> None:
    with pytest.raises(ConfigError, match="MAILPIPE_RETRY_DELAYS_S") as raised:
        load_settings(retry_delays_s=value)
    assert named.lower() in str(raised.value).lower()
