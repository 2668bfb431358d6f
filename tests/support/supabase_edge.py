"""What Supabase's API gateway (the "edge", Kong-like) does before PostgREST sees a request.

A hosted project is reached through an API gateway that checks the ``apikey``
header (or ``?apikey=`` URL parameter) against the project's keys and only
then proxies ``/rest/v1/...`` to PostgREST. Emulated here, for the paths
under ``/rest/v1/`` of :class:`~tests.support.rpc_gateway.RpcGateway`:

- A project has four keys (:class:`ProjectKeys`): the legacy HS256 JWTs
  ``anon`` and ``service_role`` and the opaque ``sb_publishable_...`` (acts as
  anon) and ``sb_secret_...`` (acts as service_role). Any other apikey is
  refused, even a JWT validly signed with the project's secret: the gateway
  compares keys, it does not verify them.
- PostgREST only reads ``Authorization``. For an opaque key the gateway puts a
  short-lived JWT of the key's role there when the request has none or carries
  the same key as its Bearer token (SDKs send both); a legacy JWT key without
  Authorization is forwarded as the Bearer token. A different Authorization
  (a user's JWT) passes through untouched, for PostgREST to verify.
- A secret key sent with a browser's User-Agent is refused.

The refusals are the gateway's, not PostgREST's: a JSON body with ``message``
and ``hint`` only, no ``code``, no ``Proxy-Status`` header. Their wording is
what hosted projects answer as quoted in public reports (the invalid-key body
in supabase-community/supabase-csharp#108 and nuxt-modules/supabase#195; the
browser refusal and the ``sb-error-code`` headers in captured responses in
public repositories), not from Supabase's documentation, which does not spell
them out. Recent reports also show the invalid-key body without its hint.
:func:`fault_answer` gives the answers of a failing gateway or CDN (502/504
from the gateway, a Cloudflare-style 520 HTML page).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

import jwt

JWT_SECRET = "local-test-jwt-secret-with-at-least-32-characters"
PROJECT_KEY_LIFETIME = 10 * 365 * 24 * 3600  # Supabase's legacy anon/service_role keys last ~10 years
# Long enough for one request and its retries, short enough to be useless if it leaked.
MINTED_TOKEN_LIFETIME = 60
SECRET_PREFIX = "sb_secret_"
PUBLISHABLE_PREFIX = "sb_publishable_"

NO_API_KEY = {"message": "No API key found in request", "hint": "No `apikey` request header or url param was found."}
INVALID_API_KEY = {"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."}
SECRET_KEY_IN_BROWSER = {
    "message": "Forbidden use of secret API key in browser",
    "hint": "Secret API keys can only be used in a protected environment and should never be used in a browser."
            " Delete this secret API key immediately!",
}
BAD_GATEWAY = {"message": "An invalid response was received from the upstream server"}
GATEWAY_TIMEOUT = {"message": "The upstream server is timing out"}
CLOUDFLARE_520 = """<!DOCTYPE html>
<html lang="en">
<head><title>supabase.co | 520: Web server is returning an unknown error</title></head>
<body>
<h1>Web server is returning an unknown error <span>Error code 520</span></h1>
<p>The origin server (here: the emulated Supabase API) gave Cloudflare an empty or
unexpected answer. (An emulated page: its shape, not Cloudflare's markup.)</p>
</body>
</html>
"""


def make_key(
    role: str | None, *, secret: str = JWT_SECRET, expires_in: int = PROJECT_KEY_LIFETIME, issued_ago: int = 86400, **claims
) -> str:
    """A legacy API key / user token as Supabase issues them: an HS256 JWT with a role claim."""
    now = int(time.time())
    payload = {"iss": "supabase", "iat": now - issued_ago, "exp": now + expires_in, **claims}
    if role is not None:
        payload["role"] = role
    return jwt.encode(payload, secret, algorithm="HS256")


@dataclass(frozen=True)
class ProjectKeys:
    """The API keys of one project: the only values its gateway accepts as ``apikey``."""

    anon: str
    service_role: str
    publishable: str
    secret: str

    @classmethod
    def generate(cls, jwt_secret: str) -> ProjectKeys:
        return cls(
            anon=make_key("anon", secret=jwt_secret),
            service_role=make_key("service_role", secret=jwt_secret),
            publishable=PUBLISHABLE_PREFIX + secrets.token_urlsafe(24),
            secret=SECRET_PREFIX + secrets.token_urlsafe(24),
        )

    def as_dict(self) -> dict[str, str]:
        return {"anon_key": self.anon, "service_role_key": self.service_role,
                "publishable_key": self.publishable, "secret_key": self.secret}


class EdgeAnswer(Exception):
    """An answer the gateway gives itself, without reaching PostgREST."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(f"{status} {body[:80]!r}")
        self.status = status
        self.body = body
        self.headers = headers

    @classmethod
    def json(cls, status: int, body: dict, **headers: str) -> EdgeAnswer:
        payload = json.dumps(body, separators=(",", ":")).encode()
        return cls(status, payload, {"Content-Type": "application/json; charset=utf-8",
                                     **{k.replace("_", "-"): v for k, v in headers.items()}})


def looks_like_browser(user_agent: str | None) -> bool:
    # Every browser's User-Agent starts with "Mozilla/"; reports show the hosted
    # gateway matching on that (PowerShell's and Apps Script's Mozilla-prefixed
    # agents are refused too, a custom agent is not).
    return bool(user_agent) and user_agent.lower().startswith("mozilla/")


class Edge:
    """Admit or refuse a request to ``/rest/v1/`` the way the project's gateway does."""

    def __init__(self, keys: ProjectKeys, jwt_secret: str) -> None:
        self.keys = keys
        self.jwt_secret = jwt_secret
        self._opaque_roles = {keys.publishable: "anon", keys.secret: "service_role"}
        self._legacy = {keys.anon, keys.service_role}

    def admit(self, headers: Mapping[str, str], query: str = "") -> dict[str, str]:
        """The headers to forward to PostgREST (names lower-case), or raise :class:`EdgeAnswer`."""
        apikey = headers.get("apikey") or next(iter(parse_qs(query).get("apikey", [])), None)
        if not apikey:
            raise EdgeAnswer.json(401, NO_API_KEY)
        forwarded = dict(headers)
        authorization = headers.get("authorization")
        if apikey in self._legacy:
            if authorization is None:
                forwarded["authorization"] = f"Bearer {apikey}"
            return forwarded
        role = self._opaque_roles.get(apikey)
        if role is None:
            raise EdgeAnswer.json(401, INVALID_API_KEY, sb_error_code="UNAUTHORIZED_INVALID_API_KEY")
        if role == "service_role" and looks_like_browser(headers.get("user-agent")):
            raise EdgeAnswer.json(401, SECRET_KEY_IN_BROWSER, sb_error_code="UNAUTHORIZED_INVALID_API_KEY_TYPE")
        if authorization is None or _bearer_token(authorization) == apikey:
            forwarded["authorization"] = f"Bearer {self.mint(role)}"
        return forwarded

    def mint(self, role: str) -> str:
        now = int(time.time())
        claims = {"iss": "supabase", "role": role, "iat": now, "exp": now + MINTED_TOKEN_LIFETIME}
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")


def _bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def fault_answer(fault: str) -> EdgeAnswer | None:
    """The answer of a failing gateway (``"502"``, ``"504"``), CDN (``"520"``), proxy (``"408"``) or
    rate limiter (``"429"``); None for other faults."""
    if fault == "502":
        return EdgeAnswer.json(502, BAD_GATEWAY)
    if fault == "504":
        return EdgeAnswer.json(504, GATEWAY_TIMEOUT)
    if fault == "520":
        return EdgeAnswer(520, CLOUDFLARE_520.encode(), {"Content-Type": "text/html; charset=UTF-8"})
    if fault == "408":
        # A proxy in front gave up waiting for the request; the page is generic, not a captured answer.
        return EdgeAnswer(408, b"<html><head><title>408 Request Time-out</title></head></html>",
                          {"Content-Type": "text/html; charset=UTF-8"})
    if fault == "429":
        # A rate limiter's refusal; the wording is generic, not a captured Supabase answer.
        return EdgeAnswer.json(429, {"message": "Too many requests"}, Retry_After="1")
    return None
