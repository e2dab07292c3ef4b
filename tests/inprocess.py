"""An ASGI app served in this test process by uvicorn on a free loopback port, in a thread of its own:
real sockets, no child process (the in-process tier of the data path's tests)."""
from __future__ import annotations

import asyncio
import threading
import time

import uvicorn

from proxy.dataplane.protocol import limited_protocol
from routing.config import Limits
from tests.support import free_port


class InProcessServer:
    def __init__(self, app, limits: Limits | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=self.port, http=limited_protocol(limits or Limits()), ws="none",
            lifespan="off", access_log=False, log_level="warning", server_header=False, date_header=False,
        ))
        self.server.install_signal_handlers = lambda: None  # uvicorn < 0.29
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.server.serve())
        self.loop.close()

    def __enter__(self) -> "InProcessServer":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "in-process server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(10)
