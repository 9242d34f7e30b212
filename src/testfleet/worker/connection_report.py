"""What a worker says about its connection to the coordinator, at the default log level.

Callers: :meth:`testfleet.worker.agent.WorkerAgent.run`, once per connection
attempt that fails or session that ends, and the WebSocket connector
(``worker/websocket_channel.py``), which names a failed open with
:func:`describe_connection_failure`. A worker pointed at a dead or wrong
address used to retry forever without a word unless its log level was raised;
now each failed attempt is one WARNING line saying what the address answered
(connection refused, a DNS failure, an HTTP status instead of the worker
channel, a TLS error, a refused hello) and the pause before the next try.

A session the coordinator ended with close code 1012 (it is restarting: its
SIGTERM closes every worker channel with it) is expected, not a fault: that
close, the failed attempts of the next ``restart_grace`` seconds (30) while it
comes back and the reconnection are logged at INFO ("coordinator restarting;
reconnecting"); a restart that takes longer is warned about as any outage is.
A 1012 that arrives before the welcome (the worker was still saying hello)
counts the same.

The same failure over and over is summarised: the first few attempts are
each logged, then at most one line per ``repeat_after`` seconds, saying since
which attempt it has been failing that way. The rest go to DEBUG.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from testfleet.protocol.channel import ChannelClosed, CloseCode, ConnectFailed
from testfleet.protocol.codec import ProtocolError

log = logging.getLogger(__name__)

#: After a 1012 close, how long reconnect refusals are expected (logged at INFO):
#: a coordinator restart takes seconds; one that takes longer is an outage.
DEFAULT_RESTART_GRACE_SECONDS = 30.0


class ChannelError(Exception):
    """The socket opened but the worker channel did not start (no answer to hello, a
    refused hello); the message says which, for :func:`describe_connection_failure`."""


def describe_connection_failure(exc: BaseException, url: str, open_timeout: float) -> str:
    """One short phrase for what ``url`` answered (or did not) when connecting failed:
    the WebSocket library's and the OS's exceptions, then :func:`describe_channel_failure`'s."""
    parts = urlsplit(url)
    address = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'wss' else 80)}"
    match exc:
        case InvalidStatus():
            return _describe_status(exc.response.status_code, exc.response.headers, url)
        case InvalidMessage():
            cause = exc.__cause__
            if isinstance(cause, ssl.SSLError):  # refused after a TLS 1.3 handshake
                return describe_tls_failure(cause, parts.hostname or "?")
            if isinstance(cause, EOFError):
                if parts.scheme == "wss":
                    # TLS 1.3: the client's half of the handshake is done before
                    # the server checks the client's certificate, and a refusal
                    # reaches the client as a closed connection, not an alert.
                    return (
                        f"{address} closed the connection without an HTTP answer: over TLS, "
                        "the coordinator refused this worker's certificate (issued by a CA "
                        "other than its --client-ca, or expired) or its TLS version"
                    )
                return f"{address} closed the connection without an HTTP answer"
            detail = f" ({cause})" if cause is not None else ""
            return f"{address} did not answer as an HTTP/1.1 server{detail}"
        case ssl.SSLError():
            return describe_tls_failure(exc, parts.hostname or "?")
        case socket.gaierror():
            return f"cannot resolve the host name {parts.hostname!r} ({exc.strerror})"
        case ConnectionRefusedError():
            return f"connection refused: nothing listens at {address}"
        case TimeoutError():
            return f"no answer from {address} within {open_timeout:g}s"
        case ConnectionClosed():
            return f"the connection closed ({exc})"
        case OSError():
            return f"{address}: {exc.strerror or exc}"
    return describe_channel_failure(exc)


#: OpenSSL's verify codes for what the worker finds wrong with the coordinator's
#: certificate (X509_V_ERR_*), in words that say what to do.
_VERIFY_PROBLEMS = {
    10: "the coordinator's certificate has expired; issue it a new one",
    9: "the coordinator's certificate is not valid yet; check the clocks",
    18: "the coordinator's certificate is self-signed and not trusted; pass its CA with --ca",
    19: "the coordinator's certificate is from an unknown CA; pass the CA that issued it with --ca",
    20: "the coordinator's certificate is from an unknown CA; pass the CA that issued it with --ca",
    21: "the coordinator's certificate is from an unknown CA; pass the CA that issued it with --ca",
}
#: OpenSSL's reasons when the coordinator refused the worker's side of the handshake.
_ALERTS = {
    "TLSV1_ALERT_UNKNOWN_CA": (
        "the coordinator refused this worker's certificate (issued by a CA it does not "
        "trust); use a certificate from the coordinator's --client-ca"
    ),
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": (
        "the coordinator refused this worker's certificate: it has expired; issue a new one"
    ),
    "CERTIFICATE_REQUIRED": (
        "the coordinator requires a client certificate; pass --cert and --key"
    ),
    "SSLV3_ALERT_BAD_CERTIFICATE": "the coordinator refused this worker's certificate",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the coordinator refused the TLS version (it needs TLS 1.2+)",
}


def describe_tls_failure(exc: ssl.SSLError, hostname: str) -> str:
    """One phrase for a failed TLS handshake, naming the usual causes: the
    coordinator's certificate from an unknown CA, for another host name, or
    expired; the coordinator refusing the worker's certificate; no TLS there."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        if code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
            return (
                f"TLS: the coordinator's certificate is not valid for {hostname!r} (hostname "
                "mismatch); connect by a name it was issued for, or reissue it with "
                "`testfleet certs server --dns/--ip`"
            )
        problem = _VERIFY_PROBLEMS.get(code) if code is not None else None
        if problem is not None:
            return f"TLS: {problem}"
        return f"TLS: the coordinator's certificate is not trusted ({exc.verify_message})"
    text = f"{getattr(exc, 'reason', None) or ''} {exc}"
    for reason, problem in _ALERTS.items():
        if reason in text:
            return f"TLS: {problem}"
    hint = " (is it a plain http:// coordinator?)" if "WRONG_VERSION_NUMBER" in text else ""
    return f"TLS error: {exc.strerror or exc}{hint}"


def describe_channel_failure(exc: BaseException) -> str:
    """One short phrase for what ended a channel or its start, whatever carried it:
    a failed open (its phrase already made), a closed channel, a refused hello or
    frame. Called by :meth:`~testfleet.worker.agent.WorkerAgent.run`."""
    match exc:
        case ConnectFailed() | ChannelError():
            return str(exc)
        case ChannelClosed():
            return f"the connection closed ({exc})"
        case ProtocolError():
            return f"protocol error ({exc.code.value}): {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _describe_status(status: int, headers: Headers, url: str) -> str:
    """An HTTP answer where the WebSocket upgrade (101) should have been."""
    content_type = headers.get("content-type", "").split(";")[0].strip()
    answered = f"HTTP {status}" + (f" {content_type}" if content_type else "")
    if status == 404:
        return f"not a testfleet coordinator (no worker channel at {url}): HTTP 404"
    if status == 403:
        # What a FastAPI app (a testfleet coordinator of another path, say) answers
        # for a WebSocket route it does not have; also what some proxies answer.
        return (
            f"HTTP 403: no worker channel at {url} (not a testfleet coordinator, "
            "or a proxy that refuses WebSockets)"
        )
    if 300 <= status < 400:
        location = headers.get("location", "?")
        return f"HTTP {status}: redirected to {location}; give the coordinator's own address"
    if status >= 500:
        return f"{answered}: the coordinator, or a proxy in front of it, is failing"
    return f"not a testfleet coordinator (it answered {answered} at {url}, not the worker channel)"


class ConnectionReporter:
    """Logs failed attempts and lost sessions for one agent (see the module docstring)."""

    def __init__(
        self,
        worker_id: str,
        url: str,
        now: Callable[[], float],
        *,
        first_attempts: int = 3,
        repeat_after: float = 60.0,
        restart_grace: float = DEFAULT_RESTART_GRACE_SECONDS,
    ) -> None:
        self._worker_id = worker_id
        self._url = url
        self._now = now
        self._first_attempts = first_attempts
        self._repeat_after = repeat_after
        self._problem: str | None = None
        self._since_attempt = 0
        self._logged_at = 0.0
        self._restart_grace = restart_grace
        #: When the coordinator said it is restarting (a 1012 close); None: it did not.
        self._restart_at: float | None = None
        #: A restart outlasted its grace and that has been warned about.
        self._restart_warned = False

    def _restarting(self, now: float) -> bool:
        """Whether a restart the coordinator announced is still within its grace."""
        return self._restart_at is not None and now - self._restart_at < self._restart_grace

    def restart_announced(self) -> None:
        """The coordinator closed the channel with 1012 (before or after its welcome):
        the refusals of the next ``restart_grace`` seconds are expected (INFO)."""
        self._restart_at = self._now()
        self._restart_warned = False

    def attempt_failed(
        self, problem: str, *, attempt: int, retry_in: float, then: str | None = None
    ) -> None:
        """Attempt number ``attempt`` (1 = the first since the last welcome) failed;
        ``then``: the next coordinator address, tried at once (several were given)."""
        now = self._now()
        if problem != self._problem:
            self._problem, self._since_attempt = problem, attempt
        elif (
            attempt > self._first_attempts
            # After a restart's INFO lines, the first warning is said at once.
            # A restart that outlasted its grace is warned about at once.
            and not (self._restart_at is not None and not self._restart_warned)
            and now - self._logged_at < self._repeat_after
        ):
            log.debug(
                "worker %s: cannot connect to %s: %s (attempt %d)",
                self._worker_id,
                self._url,
                problem,
                attempt,
            )
            return
        self._logged_at = now
        count = f"attempt {attempt}"
        if attempt > self._first_attempts and self._since_attempt < attempt:
            count += (
                f"; the same since attempt {self._since_attempt}, "
                f"said once per {self._repeat_after:g}s"
            )
        retry = f"trying {then} now" if then is not None else f"retrying in {retry_in:.1f}s"
        # While a restarting coordinator comes back, its first refusals are expected.
        level = logging.INFO if self._restarting(now) else logging.WARNING
        if level == logging.WARNING and self._restart_at is not None:
            self._restart_warned = True
        log.log(
            level,
            "worker %s: cannot connect to %s: %s; %s (%s)",
            self._worker_id,
            self._url,
            problem,
            retry,
            count,
        )

    def standby(self, then: str, *, named: bool) -> None:
        """The address is a standby coordinator (it closed the channel with code
        4010); the agent goes to ``then``: the leader it ``named``, else its next
        address."""
        if named:
            log.info(
                "worker %s: %s is a standby; following the leader at %s",
                self._worker_id,
                self._url,
                then,
            )
        else:
            log.info(
                "worker %s: %s is a standby and names no leader; trying %s",
                self._worker_id,
                self._url,
                then,
            )

    def session_ended(self, problem: str, *, retry_in: float, restarting: bool = False) -> None:
        """A welcomed session ended (lost, or closed by the coordinator);
        ``restarting``: it closed with 1012, so this is expected (INFO)."""
        self._problem = None
        self._restart_at = None
        if restarting:
            self.restart_announced()
            log.info(
                "worker %s: coordinator restarting; reconnecting to %s in %.1fs",
                self._worker_id,
                self._url,
                retry_in,
            )
            return
        log.warning(
            "worker %s: lost the connection to %s: %s; reconnecting in %.1fs",
            self._worker_id,
            self._url,
            problem,
            retry_in,
        )

    def connected(self, failed_attempts: int) -> None:
        """The coordinator welcomed the worker, after ``failed_attempts`` failures."""
        self._problem = None
        restarted = self._restarting(self._now())
        self._restart_at = None
        if failed_attempts and not restarted:
            log.warning(
                "worker %s: connected to %s after %d failed attempt(s)",
                self._worker_id,
                self._url,
                failed_attempts,
            )
        else:
            log.info("worker %s: connected to %s", self._worker_id, self._url)


def is_restart_close(exc: BaseException | None) -> bool:
    """Whether a session ended because the coordinator closed it with 1012
    (service restart). Called by the agent to pick the reporter's level."""
    return isinstance(exc, ChannelClosed) and exc.code == CloseCode.SERVICE_RESTART
