"""Reviewed tasks straight from a running Label Studio server (``video-miner import --url``).

What its Export button downloads (a project's JSON export, every task with its annotations), asked
through its REST API with a user's token: a legacy token goes as ``Authorization: Token``, a
personal access token (a JWT refresh token) is first exchanged at ``/api/token/refresh/`` for an
access token, as label-studio-sdk does (the SDK itself pins numpy and OpenCV builds this
environment cannot share). The token comes from the environment and is never printed; redirects
are not followed (the token would go with them, maybe to another host); the answer is read up to
a bound, as a file export is.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..errors import ConfigError
from ..redact import printable

#: The environment variable label-studio-sdk reads its token from too.
TOKEN_ENV = "LABEL_STUDIO_API_KEY"
TIMEOUT_S = 120.0


def fetch_tasks(url: str, project: int, token: str | None, limit: int) -> list[Any]:
    """Project ``project``'s tasks on the server at ``url``, as its JSON export holds them."""
    base = server_url(url)
    if not token:
        raise _failed(f"import --url {base}: set {TOKEN_ENV} to the access token of a Label Studio user of "
                          f"project {project} (Account & Settings > Access Token)")
    try:
        with httpx.Client(base_url=base, timeout=TIMEOUT_S, follow_redirects=False) as client:
            headers = {"Authorization": _authorization(client, base, token)}
            tasks = _get(client, base, f"/api/projects/{project}/export", headers, limit, f"project {project}'s export",
                         {"exportType": "JSON", "download_all_tasks": "true"})
            # The export names each annotation's reviewer by user id; the users' list gives their emails.
            users = _get(client, base, "/api/users/", headers, limit, "the users' list")
    except httpx.HTTPError as exc:
        raise _failed(f"cannot reach Label Studio at {base}: {printable(str(exc))}; is it running there?") from None
    if not isinstance(tasks, list):
        raise _failed(f"{base}: project {project}'s export is not a list of tasks; is {base} Label Studio?")
    emails = {u.get("id"): u.get("email") for u in users if isinstance(u, dict)} if isinstance(users, list) else {}
    for task in tasks:
        annotations = task.get("annotations") if isinstance(task, dict) else None
        for annotation in annotations if isinstance(annotations, list) else []:
            who = annotation.get("completed_by") if isinstance(annotation, dict) else None
            if isinstance(who, int) and isinstance(emails.get(who), str):
                annotation["completed_by"] = {"id": who, "email": emails[who]}
    return tasks


def _get(client: httpx.Client, base: str, path: str, headers: dict[str, str], limit: int, what: str,
         params: dict[str, str] | None = None) -> Any:
    """The JSON at ``path``, read up to ``limit`` bytes."""
    with client.stream("GET", path, headers=headers, params=params) as answer:
        _check(answer, base, what)
        body = bytearray()
        for chunk in answer.iter_bytes():
            body += chunk
            if len(body) > limit:
                raise _failed(f"{base}: {what} is over {limit >> 20} MiB; export the project from Label Studio "
                              "and import the file")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise _failed(f"{base}: {what} is not JSON ({exc}); is {base} Label Studio?") from None


def server_url(url: str) -> str:
    """``url`` as the server's base (http or https, a host, no credentials, query or fragment)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _failed(f"--url must be a Label Studio server's http(s) address, got {printable(url)!r}")
    if parts.username is not None or parts.password is not None:
        raise _failed(f"--url holds credentials: give the token in {TOKEN_ENV} instead")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _authorization(client: httpx.Client, base: str, token: str) -> str:
    """The Authorization header for ``token``: a personal access token exchanged for an access token."""
    if _jwt_type(token) != "refresh":
        return f"Token {token}"
    answer = client.post("/api/token/refresh/", json={"refresh": token})
    _check(answer, base, "the token")
    access = answer.json().get("access") if answer.headers.get("content-type", "").startswith("application/json") \
        else None
    if not isinstance(access, str):
        raise _failed(f"{base}: exchanging the personal access token gave no access token; is {base} Label Studio?")
    return f"Bearer {access}"


def _failed(message: str) -> ConfigError:
    """A failure whose line already says what to do (no generic hint after it)."""
    return ConfigError(message, hint="")


def _jwt_type(token: str) -> str | None:
    """A JWT's ``token_type`` claim; None for anything else (a legacy token)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    kind = claims.get("token_type") if isinstance(claims, dict) else None
    return kind if isinstance(kind, str) else None


def _check(answer: httpx.Response, base: str, what: str) -> None:
    """One line a user can act on for an answer that is not a success (the token never in it)."""
    status = answer.status_code
    if status < 300:
        return
    if status in (401, 403):
        raise _failed(f"{base}: Label Studio refused {TOKEN_ENV} for {what} ({status}); give the access token of "
                          "a user of the project (a legacy token needs legacy tokens enabled for the organization)")
    if status == 404:
        raise _failed(f"{base}: {what} not found (404); check --project against the project's page address")
    if 300 <= status < 400:
        raise _failed(f"{base}: the server redirects ({status}) to {printable(answer.headers.get('location', '?'))}; "
                          "give that address as --url")
    raise _failed(f"{base}: Label Studio answered {status} for {what}; see its log")
