"""A channel subscription: its position, its message handler or iterator, its lifecycle."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import Forbidden, PullyClientError, RequestTimeout
from .models import ErrorEvent, Message, Position

if TYPE_CHECKING:
    from .client import Pully

MessageHandler = Callable[[Message], object]
_END = object()


class Subscription:
    """Messages of one channel, in offset order, each exactly once, across reconnects.

    Obtained from :meth:`Pully.subscribe`. With a ``handler`` every message is passed to it (an
    async handler is awaited before the next message, so order holds); without one, iterate:
    ``async for message in sub``. Iteration ends after :meth:`unsubscribe`, :meth:`Pully.close`
    or the node ending the subscription (the ``unsubscribed`` event), and raises the error that
    stopped the client if it stopped for good (for example
    :class:`~pully_tornado.client.errors.HandshakeRefused` after a token was rejected).

    ``position`` is the last position seen (from ``subscribed`` or a message); after a
    reconnect, or the node's ``insufficient_state``, the client resubscribes with ``since`` =
    this position. Messages at or below it in the same epoch are duplicates and are dropped
    before they reach the application.
    """

    def __init__(self, client: Pully, channel: str, handler: MessageHandler | None) -> None:
        self.channel = channel
        self.position: Position | None = None
        self._client = client
        self._handler = handler
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._ended = False
        self._error: BaseException | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        # driven by the client: confirmation of the first subscribe, where it was last sent
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sent_on: object = None
        self._retries = 0
        self.server = False  # a server-side subscription: the node made it, only it ends it
        if handler is not None:
            self._dispatcher = client._emitter.spawn(self._dispatch(handler), f"{channel} handler")

    @property
    def offset(self) -> int | None:
        return None if self.position is None else self.position.offset

    @property
    def epoch(self) -> str | None:
        return None if self.position is None else self.position.epoch

    @property
    def active(self) -> bool:
        """True until :meth:`unsubscribe`, :meth:`Pully.close`, a refused resubscribe, or the
        node ending the subscription (``unsubscribed``, other than ``insufficient_state``)."""
        return not self._ended

    async def unsubscribe(self, timeout: float | None = None) -> None:
        """Stop receiving the channel. No message is delivered after this returns.

        Tells the node when connected (waiting up to ``timeout``, the client's default when
        None); when disconnected there is nothing to tell: the next connection does not
        resubscribe. Never raises for a lost connection; raises :class:`Forbidden` for a
        server-side subscription (``server``): only the app's backend ends those."""
        if self.server and self.active:
            raise Forbidden(
                f"{self.channel!r} is a server-side subscription: only the server ends it"
            )
        await self._client._unsubscribe(self, timeout)

    # -- iteration ---------------------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        if self._handler is not None:
            raise TypeError(f"subscription to {self.channel!r} has a handler: it is not iterable")
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # every later __anext__ ends too
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        message: Message = item
        return message

    async def get(self, timeout: float | None = None) -> Message:
        """The next message, waiting up to ``timeout`` seconds (then :class:`RequestTimeout`);
        ``StopAsyncIteration`` once the subscription ended."""
        try:
            async with asyncio.timeout(timeout):
                return await self.__anext__()
        except TimeoutError:
            raise RequestTimeout(f"no message on {self.channel!r} in {timeout}s") from None

    # -- driven by the client ----------------------------------------------------------------

    def _on_subscribed(self, reply: dict[str, Any]) -> bool | None:
        """Take the position of a ``subscribed`` reply; return its ``recovered`` flag."""
        self.position = Position(int(reply["offset"]), str(reply["epoch"]))
        recovered = reply.get("recovered")
        return None if recovered is None else bool(recovered)

    def _on_message(self, frame: dict[str, Any]) -> None:
        """Deliver a ``message`` frame unless it is a duplicate (at or below the position)."""
        if self._ended:
            return
        message = Message.from_frame(frame)
        last = self.position
        if last is not None and message.epoch == last.epoch and message.offset <= last.offset:
            return
        self.position = message.position
        self._queue.put_nowait(message)

    @property
    def _confirmed(self) -> bool:
        return self._ready.done() and self._ready.exception() is None

    def _end(self, error: BaseException | None = None) -> None:
        """End delivery; messages not yet handed to the application are discarded."""
        if self._ended:
            return
        self._ended = True
        self._error = error
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_END)
        if not self._ready.done():
            self._ready.set_exception(error or PullyClientError("subscription ended"))
            self._ready.exception()  # retrieved: the caller may be gone

    async def _dispatch(self, handler: MessageHandler) -> None:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            try:
                result = handler(item)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._client._emitter.emit("error", ErrorEvent(exc, self.channel))

    def __repr__(self) -> str:
        state = "active" if self.active else "ended"
        return f"<Subscription {self.channel!r} {state} at {self.position}>"
