"""Translation of kiota/msgraph/httpx failures into pipeline.errors, and Retry-After parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from kiota_abstractions.api_error import APIError
from msgraph.generated.models.o_data_errors.main_error import MainError
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from pipeline.errors import GraphRejected, GraphUnavailable, SendOutcomeUnknown
from pipeline.graph.errors import error_from_response, graph_errors, parse_retry_after, translate_error

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("10", 10.0),
            ("2.128", 2.128),
            (" 0.5 ", 0.5),
            ("0", 0.0),
            ("-3", 0.0),
            ("Sun, 22 Nov 2026 12:00:30 GMT", 30.0),
            ("Sun, 22 Nov 2026 11:00:00 GMT", 0.0),
            (None, None),
            ("", None),
            ("soon", None),
            ("nan", None),
            ("inf", None),
        ],
    )
    def test_values(self, value: str | None, expected: float | None) -> None:
        assert parse_retry_after(value, now=NOW) == expected


def _odata(status: int, code: str, retry_after: str | None = None) -> ODataError:
    headers = {"retry-after": retry_after} if retry_after else {}
    return ODataError(
        error=MainError(code=code, message=f"{code} happened"),
        response_status_code=status,
        response_headers=headers,
    )


class TestStatusCodes:
    @pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 401, 408])
    def test_transient_statuses_are_graph_unavailable_outside_sends(self, status: int) -> None:
        error = translate_error(_odata(status, "X"), mailbox="a@b.c", operation="get message")
        assert type(error) is GraphUnavailable
        assert error.status_code == status
        assert error.mailbox == "a@b.c"

    @pytest.mark.parametrize("status", [500, 502, 503, 504, 507])
    def test_any_5xx_on_a_send_is_send_outcome_unknown(self, status: int) -> None:
        error = translate_error(_odata(status, "X"), mailbox="a@b.c", operation="sendMail", is_send=True)
        assert isinstance(error, SendOutcomeUnknown)

    def test_429_on_a_send_is_plain_graph_unavailable(self) -> None:
        """A 429 is a refusal to process: nothing was sent, retrying later is safe."""
        error = translate_error(
            _odata(429, "ApplicationThrottled", "7"), mailbox="m", operation="sendMail", is_send=True
        )
        assert type(error) is GraphUnavailable
        assert error.retry_after_s == 7.0
        assert error.reason == "graph-throttled"

    @pytest.mark.parametrize("status", [400, 403, 404, 413, 405])
    @pytest.mark.parametrize("is_send", [False, True])
    def test_refusals_are_graph_rejected(self, status: int, is_send: bool) -> None:
        error = translate_error(_odata(status, "ErrorInvalidRecipients"), mailbox="m", operation="op", is_send=is_send)
        assert type(error) is GraphRejected
        assert error.status_code == status
        assert error.code == "ErrorInvalidRecipients"

    def test_message_names_operation_mailbox_and_code(self) -> None:
        error = translate_error(_odata(403, "ErrorSendAsDenied"), mailbox="boss@x.test", operation="sendMail")
        assert "sendMail" in str(error)
        assert "boss@x.test" in str(error)
        assert "ErrorSendAsDenied" in str(error)

    def test_plain_api_error_without_graph_body(self) -> None:
        """A gateway's HTML 502 leaves kiota with a bare APIError: still classified by status."""
        exc = APIError("unparseable", 502, {"Retry-After": "3"})
        error = translate_error(exc, mailbox="m", operation="get message")
        assert type(error) is GraphUnavailable
        assert error.code is None
        assert error.retry_after_s == 3.0


class TestNetworkErrors:
    request = httpx.Request("POST", "https://graph.test/v1.0/users/m/sendMail")

    @pytest.mark.parametrize(
        "exc_type", [httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.RemoteProtocolError]
    )
    def test_failures_after_the_request_may_have_left_are_unknown_on_sends(
        self, exc_type: type[httpx.HTTPError]
    ) -> None:
        exc = exc_type("boom", request=self.request)
        assert isinstance(translate_error(exc, mailbox="m", operation="sendMail", is_send=True), SendOutcomeUnknown)
        assert type(translate_error(exc, mailbox="m", operation="get message")) is GraphUnavailable

    @pytest.mark.parametrize("exc_type", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
    def test_failures_before_the_request_left_are_plain_unavailable(self, exc_type: type[httpx.HTTPError]) -> None:
        exc = exc_type("boom", request=self.request)
        error = translate_error(exc, mailbox="m", operation="sendMail", is_send=True)
        assert type(error) is GraphUnavailable
        assert error.code == exc_type.__name__


class TestRawResponses:
    def test_unexpected_success_status_on_a_send_is_unknown(self) -> None:
        """Graph answers 202 to an accepted send; a 200 has been seen for refused sends."""
        error = error_from_response(httpx.Response(200), mailbox="m", operation="sendMail", is_send=True)
        assert isinstance(error, SendOutcomeUnknown)

    def test_reads_graph_error_body(self) -> None:
        response = httpx.Response(400, json={"error": {"code": "ErrorInvalidRecipients", "message": "no"}})
        error = error_from_response(response, mailbox="m", operation="sendMail", is_send=True)
        assert type(error) is GraphRejected
        assert error.code == "ErrorInvalidRecipients"

    def test_tolerates_a_non_json_body(self) -> None:
        response = httpx.Response(502, text="<html>Bad gateway</html>", headers={"Retry-After": "1.5"})
        error = error_from_response(response, mailbox="m", operation="get message")
        assert type(error) is GraphUnavailable
        assert error.code is None
        assert error.retry_after_s == 1.5


def test_graph_errors_chains_the_cause_and_lets_pipeline_errors_through() -> None:
    cause = _odata(404, "ErrorItemNotFound")
    with pytest.raises(GraphRejected) as caught, graph_errors("m", "get message"):
        raise cause
    assert caught.value.__cause__ is cause

    mine = GraphUnavailable("already translated")
    with pytest.raises(GraphUnavailable) as again, graph_errors("m", "get message"):
        raise mine
    assert again.value is mine
