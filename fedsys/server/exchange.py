"""Push a round's messages and handle each reply the moment it arrives.

``Grid.send_and_receive`` returns only when every reply is in, so the server could not decode
while clients are still training; pushing and then pulling in a loop lets the round's
collector validate and add each update as it lands.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flwr.app import Message
from flwr.serverapp import Grid

POLL_SECONDS = 0.01  # between pulls while replies are outstanding


def exchange(
    grid: Grid,
    messages: list[Message],
    on_reply: Callable[[Message], None],
    timeout: float,
    *,
    after_push: Callable[[], None] | None = None,
) -> list[int]:
    """Push ``messages``, hand each reply to ``on_reply`` as it arrives; return silent nodes.

    ``after_push`` runs once the messages are out, before the first pull: server work that
    can overlap the clients' (the previous round's evaluation). The timeout counts from after it.
    """
    if not messages:
        return []
    ids = list(grid.push_messages(messages))
    if after_push is not None:
        after_push()
    waiting = {mid: m.metadata.dst_node_id for mid, m in zip(ids, messages, strict=True)}
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        replies = list(grid.pull_messages(list(waiting)))
        for reply in replies:
            waiting.pop(reply.metadata.reply_to_message_id, None)
            on_reply(reply)
        if waiting and not replies:
            time.sleep(POLL_SECONDS)
    return list(waiting.values())
