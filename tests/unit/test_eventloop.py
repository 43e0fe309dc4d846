"""pipeline.eventloop: which loop ``mailpipe run`` picks for each MAILPIPE_EVENT_LOOP value."""

from __future__ import annotations

import sys

import pytest
import uvloop

from pipeline.errors import ConfigError
from pipeline.eventloop import loop_factory, run, running_loop_name
from pipeline.settings import load_settings


async def _loop_name() -> str:
    return running_loop_name()


def test_auto_and_uvloop_choose_uvloop_when_it_is_installed() -> None:
    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop


def test_asyncio_keeps_the_standard_loop() -> None:
    assert loop_factory("asyncio") is None


def test_run_runs_the_coroutine_on_the_chosen_loop() -> None:
    assert run(_loop_name, "uvloop") == "uvloop"
    assert run(_loop_name, "auto") == "uvloop"
    assert run(_loop_name, "asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what a platform without the wheel sees: ImportError
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError, match="MAILPIPE_EVENT_LOOP=uvloop but uvloop is not installed"):
        loop_factory("uvloop")


def test_an_unknown_event_loop_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILPIPE_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="MAILPIPE_EVENT_LOOP"):
        load_settings()
