"""pipeline.graph.urls.expand_url against stduritemplate, kiota's own RFC 6570 expander."""

from __future__ import annotations

import random

import pytest
from stduritemplate import StdUriTemplate

from pipeline.graph import build_graph_client
from pipeline.graph.mailer import correlation_filter
from pipeline.graph.urls import expand_url
from pipeline.settings import Settings

_ALPHABET = "aZ09-._~ :/?#[]@!$&'()*+,;=%\"<>\\^`{|}é€\U0001f600\t"


def _templates() -> dict[str, str]:
    """Every URL template mailpipe's Graph calls use, read from the SDK's request builders."""
    settings = Settings(graph_base_url="http://127.0.0.1:1/v1.0", graph_static_token="t")  # type: ignore[arg-type]
    user = build_graph_client(settings).users.by_user_id("u")
    message = user.messages.by_message_id("m")
    builders = {
        "sendMail": user.send_mail,
        "messages": user.messages,
        "message": message,
        "$value": message.content,
        "send": message.send,
        "attachments": message.attachments,
        "attachment": message.attachments.by_attachment_id("a"),
        "createUploadSession": message.attachments.create_upload_session,
        "folder messages": user.mail_folders.by_mail_folder_id("f").messages,
    }
    return {name: builder.url_template for name, builder in builders.items()}


TEMPLATES = _templates()


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 12)))


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_same_url_as_kiota_for_every_template_mailpipe_calls(name: str) -> None:
    template = TEMPLATES[name]
    rng = random.Random(name)
    for _ in range(300):
        values: dict[str, object] = {"baseurl": "https://graph.test/v1.0" + rng.choice(["", "/x:y", "/a(b)'c@d"])}
        for variable in ("user%2Did", "message%2Did", "attachment%2Did", "mailFolder%2Did"):
            values[variable] = _text(rng)
        if rng.random() < 0.5:
            values["%24filter"] = correlation_filter(_text(rng))
        if rng.random() < 0.5:
            values["%24select"] = [_text(rng) or "id" for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.3:
            values["%24top"] = rng.randint(0, 1000)

        fast = expand_url(template, values)

        assert fast is not None, values
        assert fast == StdUriTemplate.expand(template, values), values


@pytest.mark.parametrize(
    ("template", "values"),
    [
        ("{+baseurl}/users{?%24count}", {"baseurl": "b", "%24count": True}),  # booleans
        ("{+baseurl}/users{?%24select}", {"baseurl": "b", "%24select": []}),  # empty lists
        ("{+baseurl}/users/{user%2Did}", {"baseurl": "b"}),  # an undefined path variable
        ("{+baseurl}/x", {"baseurl": "http://h/%41"}),  # a reserved expansion that may need encoding
        ("{+baseurl}/x", {"baseurl": "http://h/a b"}),
        ("{+baseurl}/x", {"baseurl": "http://h/é"}),
        ("{+baseurl}/users/{user%2Did}", {"baseurl": "b", "user%2Did": "\ud800"}),  # not UTF-8
        ("{+baseurl}{#fragment}", {"baseurl": "b", "fragment": "f"}),  # another operator
        ("{+baseurl}/users{?ids*}", {"baseurl": "b", "ids": ["1"]}),  # a defined exploded value
        ("{+baseurl}/users/{ids*}", {"baseurl": "b", "ids": "1"}),  # explode outside a query
        ("{+baseurl}/users/{id:3}", {"baseurl": "b", "id": "12345"}),  # prefix
        ("{+baseurl}/a b", {"baseurl": "b"}),  # a literal that needs encoding
    ],
)
def test_leaves_what_it_does_not_support_to_kiota(template: str, values: dict[str, object]) -> None:
    assert expand_url(template, values) is None


def test_query_leaves_out_undefined_values_and_keeps_empty_strings() -> None:
    template = "{+baseurl}/m{?%24filter,%24select,%24top}"

    assert expand_url(template, {"baseurl": "b", "%24filter": ""}) == "b/m?%24filter="
    assert expand_url(template, {"baseurl": "b"}) == "b/m"
    assert StdUriTemplate.expand(template, {"baseurl": "b", "%24filter": ""}) == "b/m?%24filter="
