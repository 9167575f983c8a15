"""The HTTPS half of fleet.host.client's GET: http.client and ssl, imported only by a GET over
HTTPS (an app with `tls`), so the commands that probe plain HTTP apps never load them. It
answers with plain values (client builds the Reply): client imports it, not the reverse."""

from __future__ import annotations

import http.client
import ssl
import time

from fleet.errors import AnswerTooSlow
from fleet.host.bounded import deadline


def https_get(host_header: str, path: str, timeout: float, address: str, port: int,
              headers: dict[str, str], body_cap: int) -> tuple[int, dict[str, str], str]:
    """fleet.host.client.http_get over TLS with the domain as SNI: (status, headers with
    names in lower case, the first body_cap bytes of the body). The certificate is not
    verified here (its expiry is checked apart)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = _SniConnection(address, port, timeout=timeout, context=context, sni=host_header)
    start = time.monotonic()
    try:
        conn.connect()
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            raise AnswerTooSlow(timeout)
        with deadline(conn.sock, left) as expired:
            try:
                conn.request("GET", path, headers={"Host": host_header, **headers})
                response = conn.getresponse()
                body = response.read(body_cap)
            except (OSError, http.client.HTTPException):
                if expired.is_set():
                    raise AnswerTooSlow(timeout) from None
                raise
            if expired.is_set():  # a body cut short by the deadline is no answer
                raise AnswerTooSlow(timeout)
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                body.decode(errors="replace"))
    finally:
        conn.close()


class _SniConnection(http.client.HTTPSConnection):
    """HTTPS to an address (127.0.0.1) with another name in SNI, as a browser would send."""

    def __init__(self, address: str, port: int, *, timeout: float, context: ssl.SSLContext,
                 sni: str) -> None:
        super().__init__(address, port, timeout=timeout, context=context)
        self._context = context
        self._sni = sni

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._sni)
