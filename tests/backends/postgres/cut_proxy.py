"""A TCP proxy that, once armed, forwards a client message holding `trigger` to the server,
lets the server run it, and then cuts the connection before the reply reaches the client."""

import asyncio


class CutProxy:
    def __init__(self, host, port, trigger: bytes):
        self.host, self.port, self.trigger = host, port, trigger
        self.armed = False
        self.cuts = 0

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.listen_port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, cr, cw):
        sr, sw = await asyncio.open_connection(self.host, self.port)
        cut = asyncio.Event()
        aborted = asyncio.Event()

        def abort() -> None:
            cw.transport.abort()
            sw.transport.abort()
            aborted.set()

        async def c2s():
            while data := await cr.read(65536):
                sw.write(data)
                await sw.drain()
                if self.armed and self.trigger in data:
                    self.armed = False
                    self.cuts += 1
                    cut.set()
                    # Time for the server to run and commit the statement; its reply is
                    # never forwarded.
                    asyncio.get_running_loop().call_later(0.5, abort)
            cut.set()

        async def s2c():
            while True:
                r = asyncio.ensure_future(sr.read(65536))
                c = asyncio.ensure_future(cut.wait())
                await asyncio.wait([r, c], return_when=asyncio.FIRST_COMPLETED)
                if cut.is_set():
                    r.cancel()
                    c.cancel()
                    await aborted.wait()
                    break
                c.cancel()
                data = r.result()
                if not data:
                    break
                cw.write(data)
                await cw.drain()

        await asyncio.gather(c2s(), s2c(), return_exceptions=True)
        for w in (cw, sw):
            w.transport.abort()
