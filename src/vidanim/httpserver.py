"""A threaded loopback HTTP server that stays quiet when a client hangs up.

Local storage serves its signed URLs with it; the provider simulator and the tests' doubles too.
"""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer
from typing import Any


class QuietThreadingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a hung answer must not hold up shutdown
    request_queue_size = 1024  # many workers connect at once; the default backlog is 5

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # the client went away (a timeout, a canceled download): not our error
        super().handle_error(request, client_address)
