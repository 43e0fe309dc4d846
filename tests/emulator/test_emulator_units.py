"""Pure functions of the emulator: OData filters, path clean-up, Retry-After format, public API."""

from __future__ import annotations

import pytest

import pipeline.emulator as emulator_pkg
from pipeline.emulator.envelope import normalise_path
from pipeline.emulator.errors import GraphError, format_seconds
from pipeline.emulator.models import Folder
from pipeline.emulator.odata import parse_filter
from pipeline.emulator.query import _required_property_value
from pipeline.emulator.store import MailStore
from pipeline.emulator.validation import ParsedMessage
from pipeline.graph.mailer import correlation_filter

RECORD = {
    "subject": "Quarterly report",
    "internetMessageId": "<a'b@x.test>",
    "isDraft": False,
    "from": {"emailAddress": {"address": "boss@contoso.test"}},
    "singleValueExtendedProperties": [
        {"id": "String {66F5A359-4659-4830-9070-00047EC6AC6E} Name Corr", "value": "k1"},
    ],
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("internetMessageId eq '<a''b@x.test>'", True),
        ("internetMessageId eq '<other@x.test>'", False),
        ("subject eq 'QUARTERLY REPORT'", True),
        ("isDraft eq false and startswith(subject, 'quarter')", True),
        ("not (isDraft eq false) or contains(subject, 'zzz')", False),
        ("from/emailAddress/address eq 'boss@contoso.test'", True),
        (
            "singleValueExtendedProperties/Any(ep: ep/id eq "
            "'String {66f5a359-4659-4830-9070-00047ec6ac6e} Name Corr' and ep/value eq 'k1')",
            True,
        ),
        (
            # the Name part of a property id is case-sensitive in Graph
            "singleValueExtendedProperties/any(ep: ep/id eq "
            "'String {66f5a359-4659-4830-9070-00047ec6ac6e} Name corr' and ep/value eq 'k1')",
            False,
        ),
    ],
)
def test_filter_evaluation(text: str, expected: bool) -> None:
    """Each supported filter shape matches (or not) the sample record."""
    assert bool(parse_filter(text)({"$it": RECORD})) is expected


@pytest.mark.parametrize("text", ["subject eq", "subject eq 'x' junk", "subject eq 'open", "(subject eq 'x'"])
def test_malformed_filters_are_400(text: str) -> None:
    """Anything the engine cannot parse is Graph's 400, never a crash."""
    with pytest.raises(GraphError) as caught:
        parse_filter(text)
    assert caught.value.status == 400


def test_path_normalisation() -> None:
    """Double slashes collapse, OData keys become segments, fixed segments are canonical."""
    assert normalise_path("/v1.0//users/u@x/SENDMAIL") == "/v1.0/users/u@x/sendMail"
    assert (
        normalise_path("/v1.0/users('o''b@x')/messages('AAMk=')/attachments('A1')")
        == "/v1.0/users/o'b@x/messages/AAMk=/attachments/A1"
    )
    assert normalise_path("/upload//abc") == "/upload/abc"


@pytest.mark.parametrize(("seconds", "text"), [(1.0, "1"), (0.5, "0.5"), (2.128, "2.128"), (0.0001, "0.001")])
def test_retry_after_format(seconds: float, text: str) -> None:
    """Integral values lose ``.0``; fractions are rounded up to milliseconds."""
    assert format_seconds(seconds) == text


def test_public_api_is_pinned() -> None:
    """Other parts of mailpipe code against exactly these names."""
    assert sorted(emulator_pkg.__all__) == [
        "CORRELATION_HEADER",
        "Emulator",
        "EmulatorConfig",
        "RunningEmulator",
        "create_app",
        "expected_file_sha256",
        "file_chunks",
        "run",
        "serve_in_thread",
    ]


def test_public_hosts_are_refused() -> None:
    """The emulator is a test tool: binding a non-loopback address needs allow_public=True."""
    with pytest.raises(ValueError, match="allow_public"), emulator_pkg.serve_in_thread(host="0.0.0.0"):
        pass
    with pytest.raises(ValueError, match="allow_public"):
        emulator_pkg.run(host="10.1.2.3")


def test_a_correlation_look_up_is_recognised_and_a_compound_filter_is_not() -> None:
    assert _required_property_value(correlation_filter("ab'c")) == "ab'c"
    # Anything beyond the one condition must go through the full predicate only.
    compound = correlation_filter("abc") + " or isDraft eq true"
    assert _required_property_value(compound) is None
    assert _required_property_value("isDraft eq true") is None
    assert _required_property_value(None) is None


def test_the_correlation_index_follows_every_change_to_the_store() -> None:
    store = MailStore()
    prop = "String {66F5A359-4659-4830-9070-00047EC6AC6E} Name Corr"

    def found(value: str, folder: Folder | None = None) -> list[str]:
        return [m.id for m in store.visible("Box@x.test", folder, property_value=value)]

    draft = store.create_draft(
        "box@x.test", ParsedMessage(extended_properties=[{"id": prop, "value": "K1"}]), keep_bytes=False
    )
    assert found("k1") == [draft.id]  # any case, like the OData comparison
    store.update_draft("box@x.test", draft.id, ParsedMessage(extended_properties=[{"id": prop, "value": "k2"}]))
    assert (found("k1"), found("k2")) == ([], [draft.id])
    copy = store.send("box@x.test", draft, stored=True, save=True, delay_s=0)
    assert (found("k2"), found("k2", "drafts")) == ([copy.id], [])
    store.delete("box@x.test", copy.id)
    assert found("k2") == []
    unsaved = store.new_message(
        "box@x.test", ParsedMessage(extended_properties=[{"id": prop, "value": "k3"}]), keep_bytes=False
    )
    store.send("box@x.test", unsaved, stored=False, save=False, delay_s=0)
    assert found("k3") == []
