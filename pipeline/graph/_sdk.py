"""The msgraph-sdk request builders mailpipe navigates, imported once and quietly.

Each generated request-builder module of msgraph-sdk 1.65 calls ``warnings.warn(...,
DeprecationWarning)`` in a class body, i.e. when the module is first imported, and the SDK
imports them lazily on the first call that walks through them (``client.users``, ...). That
turns the first Graph call of a process into a warning, and into an error under
``-W error``. Importing the modules here, with exactly those warnings silenced, makes the
lazy imports later hit ``sys.modules``; warnings raised by our own calls still show.
"""

from __future__ import annotations

import importlib
import warnings

__all__ = ["AttachmentsRequestBuilder", "FolderMessagesRequestBuilder", "MessageItemRequestBuilder"]

_PREFIX = "msgraph.generated.users."
_BUILDERS = (
    "users_request_builder",
    "item.user_item_request_builder",
    "item.send_mail.send_mail_request_builder",
    "item.messages.messages_request_builder",
    "item.messages.item.message_item_request_builder",
    "item.messages.item.send.send_request_builder",
    "item.messages.item.value.content_request_builder",
    "item.messages.item.attachments.attachments_request_builder",
    "item.messages.item.attachments.create_upload_session.create_upload_session_request_builder",
    "item.mail_folders.mail_folders_request_builder",
    "item.mail_folders.item.mail_folder_item_request_builder",
    "item.mail_folders.item.messages.messages_request_builder",
)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "This class is deprecated", DeprecationWarning)
    warnings.filterwarnings("ignore", "GetQueryParameters is deprecated", DeprecationWarning)
    importlib.import_module("kiota_abstractions.default_query_parameters")
    for _name in _BUILDERS:
        importlib.import_module(_PREFIX + _name)
    from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
        MessagesRequestBuilder as FolderMessagesRequestBuilder,
    )
    from msgraph.generated.users.item.messages.item.attachments.attachments_request_builder import (
        AttachmentsRequestBuilder,
    )
    from msgraph.generated.users.item.messages.item.message_item_request_builder import (
        MessageItemRequestBuilder,
    )
