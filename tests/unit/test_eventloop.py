"""pipeline.eventloop: which loop ``mailpipe run`` picks for each MAILPIPE_EVENT_LOOP value."""

from __future__ import annotations

import sys

import pytest
import uvloop

from pipeline.errors import ConfigError
from pipeline.eventloop import loop_factory, run, running_loop_name
from pipeline.settings import Settings, load_settings


async def _loop_name() -> str:
    return running_loop_name()


def test_the_standard_loop_is_the_default() -> None:
    assert Settings().event_loop == "asyncio"
    assert loop_factory("asyncio") is None


def test_uvloop_is_chosen_when_asked_for() -> None:
    assert loop_factory("uvloop") is uvloop.new_event_loop


def test_run_runs_the_coroutine_on_the_chosen_loop() -> None:
    assert run(_loop_name, "uvloop") == "uvloop"
    assert run(_loop_name, "asyncio") == "asyncio"


def test_uvloop_asked_for_but_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what a platform without the wheel sees: ImportError
    with pytest.raises(ConfigError, match=r"MAILPIPE_EVENT_LOOP=uvloop but uvloop is not installed"):
        loop_factory("uvloop")


def test_an_unknown_event_loop_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILPIPE_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="MAILPIPE_EVENT_LOOP"):
        load_settings()
