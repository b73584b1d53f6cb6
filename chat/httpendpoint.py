"""The /http/ endpoint: the long-poll transport's requests (docs/protocol.md, section 7).

An ordinary Django POST behind the usual middleware: Django's CSRF protection applies as to a
form, the user comes from the session cookie on every request, and a present ``Origin`` must
pass the WebSocket's rule. The body is validated here; the stream (chat/longpoll.py) does
the rest. Refusals before any frame is handled are HTTP statuses with a JSON body.
"""
import json
import re

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_POST

from chat import admission, protocol, runtime
from chat.errors import ServerBusy
from chat.longpoll import HttpStream, Superseded, response_body
from chat.ratelimit import Budgets
from chat.origins import origin_allowed

CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
BUSY = "the server is busy: try again later"


class Refusal(Exception):
    """A request answered with ``status`` and a JSON ``body`` before any frame is handled."""

    def __init__(self, status, body, retry_after=None):
        super().__init__(body)
        self.status, self.body, self.retry_after = status, body, retry_after


def bad_request(detail, status=400):
    return Refusal(status, {"error": {"code": "bad_request", "detail": detail}})


def closed(status, code, reason, retry_after=None):
    return Refusal(status, {"close": {"code": code, "reason": reason}}, retry_after)


@require_POST
def http_transport(request):
    """Handle one request of the long-poll transport."""
    if not origin_allowed(request.META.get("HTTP_ORIGIN"), request.get_host(),
                          settings.CHAT_ALLOWED_ORIGINS):
        return HttpResponse("This origin may not use this endpoint.\n", status=403,
                            content_type="text/plain")
    try:
        response = HttpResponse(answer(request), content_type="application/json")
    except Refusal as refusal:
        response = HttpResponse(protocol.encode(refusal.body), status=refusal.status,
                                content_type="application/json")
        if refusal.retry_after is not None:
            response["Retry-After"] = str(refusal.retry_after)
    if admission.current().draining:
        # The next request must find the new worker: not this one again, on a kept-alive
        # connection, refused until it exits.
        response["Connection"] = "close"
    return response


def answer(request):
    """Return the response body of one request; raise ``Refusal`` before any frame."""
    body = parse_body(request)
    stream = find_or_start(body, request.COOKIES.get(settings.SESSION_COOKIE_NAME))
    if body["frames"] and not stream.requests.take():  # bare polls are paced instead
        raise Refusal(429, {"error": {"code": "rate_limited", "detail": (
            f"slow down: at most {settings.CHAT_HTTP_REQUEST_RATE:g} requests a second "
            f"with frames on one stream")}}, retry_after=1)
    try:
        return stream.exchange(body["frames"], body["ack"], body["wait"],
                               settings.CHAT_HTTP_POLL_TIMEOUT)
    except Superseded:
        return response_body(stream.conn_id, stream.n, [], superseded=True)


def find_or_start(body, session_key):
    """Return the stream this request continues, or start one (admitted like a handshake)."""
    try:
        signed_in = runtime.sign_ins().look_up(session_key)
    except ServerBusy:
        raise closed(503, 1013, BUSY, retry_after=1) from None
    if signed_in is None:
        raise closed(401, 4401, "authentication required")
    user, expires_at = signed_in
    streams = runtime.streams()
    stream = streams.find(body["client"], user.pk, session_key, body["stream"], body["ack"])
    if stream is not None:
        return stream
    ticket = admission.current().enter()
    if not callable(ticket):
        raise closed(503, 1013, BUSY, retry_after=ticket)
    stream = HttpStream(user, body["client"], linger=settings.CHAT_HTTP_LINGER,
                        min_interval=settings.CHAT_HTTP_MIN_INTERVAL,
                        request_rate=settings.CHAT_HTTP_REQUEST_RATE,
                        request_burst=settings.CHAT_HTTP_REQUEST_BURST, registry=streams,
                        limits=client_limits(),
                        hub=runtime.hub(), limiter=runtime.limiter(),
                        authority=runtime.authority(), session_key=session_key,
                        budgets=Budgets.from_settings())
    if not stream.open(expires_at):
        ticket()
        code, reason = stream.refused()
        raise closed(429, code, reason)
    streams.add(stream)
    stream.settle_with(ticket, settings.CHAT_HANDSHAKE_TIMEOUT)
    stream.resume(body["rooms"])
    return stream


def client_limits():
    """What a new stream's first answer tells the client to keep to (docs/protocol.md, 7)."""
    return {"poll_timeout": settings.CHAT_HTTP_POLL_TIMEOUT, "frames": settings.CHAT_HTTP_FRAMES,
            "request_rate": settings.CHAT_HTTP_REQUEST_RATE,
            "request_burst": settings.CHAT_HTTP_REQUEST_BURST}


def parse_body(request):
    """Return the request body's fields, checked; raise a 400 (or 413) ``Refusal``."""
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > settings.CHAT_HTTP_MAX_BODY:
        raise bad_request(f"the body is over {settings.CHAT_HTTP_MAX_BODY} bytes", status=413)
    try:
        data = json.loads(request.body)
    except RecursionError:
        raise bad_request("the body is nested too deeply") from None
    except ValueError:
        raise bad_request("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    client = data.get("client")
    if not (isinstance(client, str) and CLIENT_ID.fullmatch(client)):
        raise bad_request("client must be 8 to 64 characters of A-Z, a-z, 0-9, _ and -")
    stream = data.get("stream")
    if stream is not None and not (isinstance(stream, str) and len(stream) <= 64):
        raise bad_request("stream must be the stream of the last response, or null")
    ack = data.get("ack", 0)
    if type(ack) is not int or ack < 0:
        raise bad_request("ack must be the n of the last response applied (0 before any)")
    wait = data.get("wait", False)
    if not isinstance(wait, bool):
        raise bad_request("wait must be true or false")
    return {"client": client, "stream": stream, "ack": ack, "wait": wait,
            "rooms": _rooms(data.get("rooms", {})), "frames": _frames(data.get("frames", []))}


def _rooms(rooms):
    most = settings.CHAT_ROOMS_PER_SOCKET
    if not isinstance(rooms, dict) or len(rooms) > most:
        raise bad_request(f"rooms must be an object of at most {most} rooms, each with its since")
    for slug, since in rooms.items():
        if type(since) is not int or since < 0:
            raise bad_request(f"rooms[{slug!r}] must be the newest seq held (0 or more)")
    return rooms


def _frames(frames):
    most = settings.CHAT_HTTP_FRAMES
    if not isinstance(frames, list) or len(frames) > most:
        raise bad_request(f"frames must be a list of at most {most} frames")
    for n, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise bad_request(f"frames[{n}] must be a JSON object")
        if len(protocol.encode(frame)) > settings.CHAT_MAX_MESSAGE_BYTES:
            raise bad_request(f"frames[{n}] is over {settings.CHAT_MAX_MESSAGE_BYTES} bytes")
    return frames
