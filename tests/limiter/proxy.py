"""A TCP forwarder to PostgreSQL that a test controls, to play "the database is away".

The limiter tests start it late (nothing listens on the port yet). The database-restart test
plays a server restart as clients see it: :meth:`TcpProxy.refuse` closes the listening socket
(connections refused: the server is down), :meth:`TcpProxy.drop` cuts the connections still open,
:meth:`TcpProxy.starting_up` answers every new connection the way PostgreSQL does while it
recovers (``FATAL 57P03 the database system is starting up``), and :meth:`TcpProxy.resume`
forwards again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

#: Codes of the start-up requests a client may send before its StartupMessage (SSL, GSS encryption).
_ENCRYPTION_REQUESTS = (80877103, 80877104)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port`` while listening."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._closing: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._starting_up = False
        #: Connections forwarded so far, how many of them :meth:`drop` cut, and how many were
        #: answered "starting up".
        self.accepted = 0
        self.dropped = 0
        self.turned_away = 0

    async def start(self) -> None:
        """Listen on :attr:`port` (again, after :meth:`refuse`)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def refuse(self) -> None:
        """Stop listening at once: new connections are refused, those open keep working."""
        if self._server is not None:
            self._server.close()
            # Not awaited here: from Python 3.12 wait_closed() also waits for open connections.
            self._closing.append(self._server)
            self._server = None

    async def drop(self) -> int:
        """Cut every open connection, both ways; returns how many there were."""
        connections = list(self._connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        self.dropped += len(connections)
        closing, self._closing = self._closing, []
        for server in closing:
            await server.wait_closed()
        return len(connections)

    async def pause(self) -> int:
        """:meth:`refuse` then :meth:`drop`; returns how many connections were cut."""
        await self.refuse()
        return await self.drop()

    async def starting_up(self) -> None:
        """Listen, but answer each new connection with PostgreSQL's "starting up" error and close it."""
        self._starting_up = True
        await self.start()

    async def resume(self) -> None:
        """Forward connections again after :meth:`pause` or :meth:`starting_up`."""
        self._starting_up = False
        await self.start()

    async def stop(self) -> None:
        await self.pause()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._starting_up:
            self.turned_away += 1
            await _answer_starting_up(reader, writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            writer.close()  # the target is down too: the client sees its connection closed
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        self.accepted += 1
        task = asyncio.create_task(self._forward(reader, writer, up_reader, up_writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:  # reset by either side
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()


async def _answer_starting_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """What PostgreSQL answers while it recovers: it reads the start-up packet, then FATAL 57P03."""
    try:
        while True:
            (length,) = struct.unpack("!i", await reader.readexactly(4))
            packet = await reader.readexactly(length - 4)
            if struct.unpack("!i", packet[:4])[0] not in _ENCRYPTION_REQUESTS:
                break
            writer.write(b"N")  # no SSL / GSS encryption: the client sends its StartupMessage next
        fields = b"".join(
            code + text.encode() + b"\0"
            for code, text in (
                (b"S", "FATAL"),
                (b"V", "FATAL"),
                (b"C", "57P03"),
                (b"M", "the database system is starting up"),
            )
        )
        writer.write(b"E" + struct.pack("!i", len(fields) + 5) + fields + b"\0")
        await writer.drain()
    except (asyncio.IncompleteReadError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
