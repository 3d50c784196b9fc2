"""``http``: one HTTP request; and ``send``, the request helper ``check`` and ``notify`` share.

The standard library's ``urllib.request`` does the work (environment proxies honoured, redirects
of GET/HEAD followed).  A redirect to another origin (scheme, host or port) never carries
``Authorization``, ``Proxy-Authorization``, ``Cookie`` or a header whose value holds a secret
(SPEC §9); a header value with CR or LF is refused before anything is sent.  A request runs in
a helper thread so that a cancelled step (Ctrl-C) does not wait for a slow server: the helper
is left to die at its own timeout.  The body read is bounded (``MAX_BODY``); outputs hold a
bounded text excerpt and the parsed JSON, if any.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from runbook_engine import __version__
from runbook_engine.actions import ActionContext, BuiltinAction, Masker
from runbook_engine.errors import ActionFailed
from runbook_engine.format.durations import format_duration

MAX_BODY = 8 * 1024 * 1024  # bytes read from a reply; past it the body is cut (json: None)
BODY_OUTPUT = 64 * 1024  # characters of the body kept in the outputs
EXCERPT = 1000  # characters of the body shown under a failure
USER_AGENT = f"runbook/{__version__}"
MIN_RETRY_AFTER = 1.0  # seconds: the least wait after a 429/503 with Retry-After
RATE_LIMITED = 20  # rate-limited answers waited out for one call, at most
RETRY_4XX = frozenset({408, 409, 425, 429})  # client errors that may pass when sent again
# never sent on to another origin after a redirect (besides headers that hold a secret)
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    truncated: bool  # the reply was longer than MAX_BODY

    def text(self, limit: int = BODY_OUTPUT, masker: Masker | None = None) -> str:
        """The body as text, at most ``limit`` characters; with ``masker``, masked before
        it is cut (a secret that straddles the cut is not left half)."""
        text = self.body.decode("utf-8", errors="replace")
        if masker is not None:
            return masker.head(text, limit) + ("…" if len(text) > limit else "")
        return text if len(text) <= limit else text[:limit] + "…"

    def json(self) -> Any:
        """The parsed body, or None when it is empty, cut or not JSON."""
        if not self.body.strip() or self.truncated:
            return None
        try:
            return jsonlib.loads(self.body)
        except ValueError:
            return None


class RequestError(Exception):
    """No reply.  ``maybe_received`` says whether the server may have seen the request (a
    timeout or a dropped connection) or surely did not (refused, unknown host)."""

    def __init__(self, message: str, *, maybe_received: bool, refused: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.maybe_received = maybe_received
        self.refused = refused  # refused before sending: trying again cannot help


def secret_headers(headers: Mapping[str, str], mask: Callable[[str], str]) -> frozenset[str]:
    """The names of the headers whose value holds a secret (``mask`` changes it)."""
    return frozenset(k.lower() for k, v in headers.items() if mask(v) != v)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, minus the credentials when the new URL is another origin."""

    def __init__(self, secret: Collection[str]) -> None:
        super().__init__()
        self.drop = CREDENTIAL_HEADERS | {s.lower() for s in secret}

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(req.full_url) != _origin(new.full_url):
            for name in [n for n in new.headers if n.lower() in self.drop]:
                del new.headers[name]
        return new


class _Helpers:
    """Daemon threads that make requests for callers that can be cancelled: a caller waits
    for its request, or leaves it to die at its own timeout (a daemon thread never holds up
    the process's exit). Threads are reused (starting one costs more than a short request
    to a server nearby) and end after ``IDLE`` seconds without work."""

    IDLE = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0

    def submit(self, work: Callable[[], None]) -> None:
        with self._lock:
            spare = self._idle > 0
            if spare:
                self._idle -= 1
        self._work.put(work)
        if not spare:
            threading.Thread(target=self._serve, name="runbook-http", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                work = self._work.get(timeout=self.IDLE)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # nobody counts on this thread: it may end
                        self._idle -= 1
                        return
                continue
            work()
            with self._lock:
                self._idle += 1


_helpers = _Helpers()


def opener_for(secret: Collection[str]) -> urllib.request.OpenerDirector:
    """An opener with urllib's handlers (environment proxies read now), whose redirects
    drop the credentials and the ``secret`` headers on the way to another origin. Building
    one costs about 0.3 ms: a step that sends many requests keeps it (``HttpAction``)."""
    return urllib.request.build_opener(_Redirects(secret))


def send(
    method: str,
    url: str,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
    cancel: threading.Event | None = None,
    secret: Collection[str] = (),
    opener: urllib.request.OpenerDirector | None = None,
) -> Response:
    """One request; any status is a ``Response``; no reply raises ``RequestError``.
    ``secret``: names of headers that hold a secret, dropped (like ``Authorization``) on a
    redirect to another origin; ``opener``: one from ``opener_for(secret)``, reused."""
    if timeout <= 0:
        raise RequestError("no time left for the request", maybe_received=False)
    for name, value in (headers or {}).items():
        problem = header_problem(name, value)
        if problem:
            raise RequestError(f"header {name!r}: {problem}", maybe_received=False, refused=True)
    use = opener if opener is not None else opener_for(secret)
    if cancel is None:
        return _send(method, url, timeout, dict(headers or {}), data, use)
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["response"] = _send(method, url, timeout, dict(headers or {}), data, use)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
            box["error"] = exc
        finally:
            done.set()

    _helpers.submit(work)
    while not done.wait(0.05):
        if cancel.is_set():
            raise RequestError("interrupted", maybe_received=True)
    if "error" in box:
        raise box["error"]
    response: Response = box["response"]
    return response


def header_problem(name: str, value: str) -> str | None:
    """Why a header cannot be sent as it is, or None. A line break would smuggle a header;
    other control characters reach a log or a terminal raw; HTTP/1.1 sends headers in
    ISO-8859-1, so a character beyond it cannot be sent (``| urlencode`` it)."""
    text = f"{name}{value}"
    if "\r" in text or "\n" in text:
        return "a line break (CR or LF) in a header is refused"
    bad = next((c for c in text if (ord(c) < 32 and c != "\t") or ord(c) == 127), None)
    if bad is not None:
        return f"a control character ({bad!r}) in a header is refused"
    wide = next((c for c in text if ord(c) > 255), None)
    if wide is not None:
        return (
            f"the character {wide!r} cannot be sent in an HTTP header (ISO-8859-1 only): "
            "encode the value, e.g. `| urlencode`"
        )
    return None


def idempotency_header(key: str) -> str:
    """The ``Idempotency-Key`` header for the engine's key ``RUN/STEP/ATTEMPT/KEY``: printable
    ASCII as it is, anything else percent-encoded (UTF-8), so that a member whose key is
    ``k☃`` or holds a control character is sent like any other, always with the same key."""
    if all(32 < ord(c) < 127 for c in key):
        return key
    from urllib.parse import quote

    return quote(key, safe="".join(chr(i) for i in range(33, 127) if chr(i) != "%"))


def _send(
    method: str,
    url: str,
    timeout: float,
    headers: dict[str, str],
    data: bytes | None,
    opener: urllib.request.OpenerDirector,
) -> Response:
    headers.setdefault("User-Agent", USER_AGENT)
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    deadline = time.monotonic() + timeout
    try:
        reply: Any = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        reply = exc  # a status outside 2xx still is a reply
    except urllib.error.URLError as exc:
        raise _no_reply(exc.reason, timeout) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _no_reply(exc, timeout) from None
    try:
        body, truncated = _read(reply, deadline)
    except (OSError, http.client.HTTPException) as exc:
        raise _no_reply(exc, timeout, while_reading=True) from None
    finally:
        reply.close()
    merged: dict[str, str] = {}
    for key, value in reply.headers.items():
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return Response(int(reply.status), str(reply.reason or ""), merged, body, truncated)


def _read(reply: Any, deadline: float) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY:
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        chunk = reply.read(min(65536, MAX_BODY + 1 - size))
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:MAX_BODY], True


def _no_reply(reason: object, timeout: float, *, while_reading: bool = False) -> RequestError:
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return RequestError(f"timed out after {format_duration(timeout)}", maybe_received=True)
    if isinstance(reason, ConnectionRefusedError):
        return RequestError("connection refused", maybe_received=False)
    if isinstance(reason, socket.gaierror):
        return RequestError(f"unknown host ({reason.strerror})", maybe_received=False)
    if isinstance(reason, http.client.RemoteDisconnected) or (
        while_reading and isinstance(reason, http.client.IncompleteRead)
    ):
        return RequestError("the server closed the connection without a reply", maybe_received=True)
    if isinstance(reason, ConnectionResetError):
        return RequestError("the connection was reset by the server", maybe_received=True)
    if isinstance(reason, OSError) and reason.strerror:
        return RequestError(reason.strerror.lower(), maybe_received=True)
    return RequestError(str(reason) or type(reason).__name__, maybe_received=True)


def expected_statuses(value: object) -> tuple[list[int] | None, str]:
    """``expect_status`` as a list (None: any 2xx) and its wording for messages."""
    if isinstance(value, int):
        codes = [value]
    elif isinstance(value, list) and value:
        codes = [int(v) for v in value]
    else:
        return None, "2xx"
    return codes, " or ".join(str(c) for c in codes)


def status_ok(status: int, codes: list[int] | None) -> bool:
    return 200 <= status < 300 if codes is None else status in codes


def indented(text: str, limit: int = EXCERPT) -> str:
    text = text.strip()
    if len(text) > limit:
        text = text[:limit] + "…"
    return "\n".join("    " + line for line in text.splitlines())


def retry_after(reply: Response) -> float | None:
    """Seconds a 429/503 reply asks to wait (``Retry-After``: seconds or an HTTP date)."""
    value = next((v for k, v in reply.headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = str(value).strip()
    if value.isdigit():
        return float(value)
    try:
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpAction(BuiltinAction):
    name = "http"
    summary = "send an HTTP request"
    idempotent = False
    # per member (foreach), a call re-sent with the same Idempotency-Key is safe: the server
    # de-duplicates on it, so a call cut by a crash is sent again rather than left unknown
    keyed_idempotent = True
    changes = True
    url_keys = frozenset({"url"})

    def describe(self, params: Mapping[str, Any]) -> str:
        return f"{params.get('method', 'GET')} {params.get('url')}"

    def run(self, params: Mapping[str, Any], ctx: ActionContext) -> Mapping[str, Any]:
        method = str(params.get("method", "GET"))
        url = str(params["url"])
        headers = {str(k): str(v) for k, v in (params.get("headers") or {}).items()}
        if "json" in params and "body" in params:
            raise ActionFailed("http: give `json` or `body`, not both", retryable=False)
        data: bytes | None = None
        if "json" in params:
            data = jsonlib.dumps(params["json"]).encode()
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
        elif "body" in params:
            data = str(params["body"]).encode()
        if ctx.idempotency_key and not any(k.lower() == "idempotency-key" for k in headers):
            headers["Idempotency-Key"] = idempotency_header(ctx.idempotency_key)
        codes, wanted = expected_statuses(params.get("expect_status"))
        mask = ctx.masker.mask
        what = f"{method} {url}"
        secret = secret_headers(headers, mask)
        # one opener per run and set of secret headers: a foreach sends thousands of requests
        names = ",".join(sorted(secret))
        opener = ctx.resources.get(f"http.opener:{names}", lambda: opener_for(secret))
        limited = 0
        while True:
            try:
                reply = send(
                    method,
                    url,
                    timeout=ctx.remaining(),
                    headers=headers,
                    data=data,
                    # a call the engine may leave behind is sent from this thread
                    cancel=None if ctx.abandonable else ctx.cancel,
                    secret=secret,
                    opener=opener,
                )
            except RequestError as exc:
                raise ActionFailed(
                    mask(f"{what} failed: {exc.message}"), retryable=not exc.refused
                ) from None
            wait = retry_after(reply) if reply.status in (429, 503) else None
            if wait is None or status_ok(reply.status, codes):
                break
            # rate limited: wait as the server asks (at least MIN_RETRY_AFTER: a `0` or a
            # date gone by does not make a loop of requests), within the step's remaining
            # time, at most RATE_LIMITED times for one call; then the step's retries decide
            limited += 1
            wait = max(wait, MIN_RETRY_AFTER)
            if limited > RATE_LIMITED or wait > ctx.remaining() or not ctx.sleep(wait):
                break
        outputs = {
            "status": reply.status,
            "json": reply.json(),
            "body": reply.text(BODY_OUTPUT, ctx.masker),
            "headers": reply.headers,
        }
        if not status_ok(reply.status, codes):
            raise ActionFailed(
                mask(f"{what} returned {reply.status} {reply.reason}, expected {wanted}"),
                details=indented(reply.text(EXCERPT, ctx.masker)),
                outputs=outputs,
                # a client error is the same answer next time (a declined card: 422); a
                # timeout, a conflict still settling, a rate limit and 5xx may pass later
                retryable=reply.status not in range(400, 500) or reply.status in RETRY_4XX,
            )
        return outputs
