"""Secrets in URLs, masked wherever a URL is shown or stored for people, and text made safe to
print: camera URLs nearly always carry a password (``rtsp://admin:pass@cam``), signed links a token
(``?X-Amz-Signature=...``). The registry keeps inputs whole, so a run can reconnect; everything a
person reads (the terminal, logs, status, metrics, metrics.json, the manifest, the gallery, the
lock file, failures.tsv) goes through :class:`Redactor`."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from rich.markup import escape

MASK = "***"
#: Query parameters whose values are credentials (matched case-insensitively, also as a suffix
#: after "-" or "_": ``X-Amz-Signature``, ``api_key``, ``hdnts``'s ``hmac`` ...).
SECRET_PARAMS = frozenset({
    "token", "access_token", "refresh_token", "id_token", "auth", "authorization", "key", "api_key", "api-key",
    "apikey", "x-api-key", "secret", "client_secret", "password", "passwd", "pass", "pwd", "sig", "signature", "hmac",
    "session", "sessionid", "credential", "credentials", "security-token", "securitytoken", "jwt", "hdnts",
})
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]{1,15}://[^\s'\"<>\]\[`]+")
_USERINFO = re.compile(r"(//)(?!\*\*\*@)[^/@\s]*@")
_PARAM = re.compile(r"(?<![\w.-])([\w.-]+=)([^&\s#'\"<>]+)")
#: Candidates for escaping: anything but printable ASCII (checked by category below).
_NOT_ASCII = re.compile(r"[^\x20-\x7e]")
#: Shown escaped, never sent to a terminal, a file or a page as they are: control characters (C0,
#: C1, DEL), format characters (bidi overrides such as U+202E that make ``invoice\u202egpj.exe``
#: read as ``invoiceexe.jpg``, zero-width spaces), lone surrogates (undecodable bytes of a file
#: name), line and paragraph separators, and the two non-characters XML refuses.
_HIDDEN = {"Cc", "Cf", "Cs", "Zl", "Zp"}
#: Cells a spreadsheet would read as a formula (OWASP, "CSV injection").
_FORMULA = ("=", "+", "-", "@")


@dataclass(frozen=True)
class Redactor:
    #: Lower-case names of query parameters whose values are masked.
    params: frozenset[str] = SECRET_PARAMS

    @classmethod
    def with_extra(cls, names: Iterable[str]) -> Redactor:
        return cls(SECRET_PARAMS | {n.lower() for n in names})

    def _secret(self, name: str) -> bool:
        low = name.lower()
        return low in self.params or any(low.endswith(sep + p) for p in self.params if len(p) > 3 for sep in "-_")

    def url(self, url: str) -> str:
        """``url`` with its user info and credential-like query values masked; unchanged (the very
        same string) when it holds none."""
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:  # not a URL Python parses (a stray "[" in the host, a port of letters)
            return self._shape(url)
        netloc = parts.netloc
        if parts.username is not None or parts.password is not None:
            netloc = f"{MASK}@{host or ''}" + (f":{port}" if port else "")
        # Only the values of secret parameters change; the rest of the query stays as it was written.
        query = "&".join(f"{name}={MASK}" if self._secret(unquote(name)) else part
                         for part in parts.query.split("&") for name in [part.split("=", 1)[0]])
        if netloc != parts.netloc or query != parts.query:
            url = urlunsplit(parts._replace(netloc=netloc, query=query))
        return self._shape(url)

    def _shape(self, text: str) -> str:
        """What a parser did not see as user info or query (a "#" in a password makes the rest a
        fragment), masked by its shape."""
        return self._params(_USERINFO.sub(lambda m: m.group(1) + MASK + "@", text))

    def _params(self, text: str) -> str:
        return _PARAM.sub(lambda m: m.group(1) + (MASK if self._secret(m.group(1).rstrip("=")) else m.group(2)), text)

    def text(self, text: str) -> str:
        """Every URL in ``text`` (an error message, a command line) redacted, and any credential-like
        ``name=value`` left over (a URL cut short by a space or a line break in it)."""
        return self._shape(_URL.sub(lambda m: self.url(m.group()), text))


DEFAULT = Redactor()


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if unicodedata.category(char) in _HIDDEN or char in "\ufffe\uffff":
        return char.encode("unicode_escape", errors="backslashreplace").decode("ascii")
    return char


def printable(text: str) -> str:
    """``text`` with control and invisible characters shown escaped (``\\x1b``, ``\\n``,
    ``\\u202e``): a name never moves the cursor, clears the screen, starts a new line, turns the
    text around it backwards, or breaks the XML and JSON it is written into."""
    return _NOT_ASCII.sub(_escaped, text)


def cell(text: str) -> str:
    """``text`` as a cell of a TSV or CSV file: printable, and never a formula when a spreadsheet
    opens it (a leading ``=``, ``+``, ``-`` or ``@`` gets a ``'`` before it, as OWASP recommends)."""
    shown = printable(text)
    return "'" + shown if shown.startswith(_FORMULA) else shown


def plain(text: str, redactor: Redactor = DEFAULT) -> str:
    """A name or message to print through Rich: secrets masked, control characters escaped, and
    ``[...]`` shown as it is (never read as markup)."""
    return escape(printable(redactor.text(text)))


class RedactingFilter(logging.Filter):
    """Masks secrets in every record a handler writes, whatever logged it (yt-dlp, FFmpeg's messages
    through PyAV, the readers of live streams)."""

    def __init__(self, redactor: Redactor = DEFAULT) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = printable(self.redactor.text(message))
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
