"""Credentials stay out of logs, params, tags, job files and artifacts.

A tracking server behind MLflow's basic-auth app takes its user and password from
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (Kubernetes Secrets on the cluster, CI secrets in
a workflow). A user who writes them into the URI instead (``https://ci:pw@mlflow.example``) gets them moved
into those variables at the entry point (:func:`adopt_uri_credentials`), so every URI the rest of the system
passes on, logs or writes is the clean one. :func:`redact` is the last line of defence for text that is
logged or written anyway: passwords inside URIs, signed-URL and token query parameters, AWS key ids and
the values of the credential variables themselves become ``***``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

#: environment variables whose values are secrets wherever they appear
SECRET_ENV = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "KFP_TOKEN",
    "KFP_PASSWORD",
    "HF_TOKEN",
    "GITHUB_TOKEN",
)

# scheme://user:password@host -> the password; scheme://token@host (no colon) is a token too
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*)(?::(?P<pw>[^@/\s]*))?@")
_QUERY = re.compile(
    r"(?P<key>[?&;](?:x-amz-(?:signature|credential|security-token)|signature|sig|token|access_token|"
    r"password|passwd|secret|api_key|apikey|key)=)(?P<value>[^&\s#\"']+)",
    re.IGNORECASE,
)
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
_BEARER = re.compile(r"(?P<key>\b(?:Bearer|Basic)\s+)(?P<value>[A-Za-z0-9._~+/=\-]{8,})")


def _userinfo(match: re.Match) -> str:
    user, pw = match.group("user"), match.group("pw")
    if pw is None:  # a bare token as userinfo (https://TOKEN@host)
        return f"{match.group('scheme')}{MASK}@" if user else match.group(0)
    return f"{match.group('scheme')}{user}:{MASK}@"


def _secret_values() -> list[str]:
    values = {os.environ.get(name, "") for name in SECRET_ENV}
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def redact(text: Any) -> Any:
    """``text`` with every credential in it replaced by ``***``; anything not a string is returned as is."""
    if not isinstance(text, str) or not text:
        return text
    out = _USERINFO.sub(_userinfo, text)
    out = _QUERY.sub(lambda m: m.group("key") + MASK, out)
    out = _AWS_KEY_ID.sub(MASK, out)
    out = _BEARER.sub(lambda m: m.group("key") + MASK, out)
    for value in _secret_values():
        out = out.replace(value, MASK)
    return out


def redact_obj(obj: Any) -> Any:
    """A copy of a JSON-like structure (dicts, lists, strings) with :func:`redact` applied to every string."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v) for v in obj)
    return obj


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """``scheme://user:pw@host/path`` -> (``scheme://host/path``, user, pw); a URI without userinfo is
    returned as it is with (None, None)."""
    if not isinstance(uri, str) or "://" not in uri or "@" not in uri.split("://", 1)[1].split("/", 1)[0]:
        return uri, None, None
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), parts.username, parts.password


def strip_credentials(uri: str) -> str:
    """The URI without its userinfo (what may be logged or written)."""
    return split_credentials(uri)[0]


def adopt_uri_credentials(uri: str | None) -> str | None:
    """Move the user and password of a tracking URI into ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD`` (which MLflow and every child process read) and return the clean URI.
    Variables already set win: the URI's userinfo never overrides an identity given by the environment."""
    if not uri:
        return uri
    clean, user, password = split_credentials(uri)
    if user and "MLFLOW_TRACKING_USERNAME" not in os.environ:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
    if password and "MLFLOW_TRACKING_PASSWORD" not in os.environ:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return clean


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's final message (arguments included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's problem, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add :class:`RedactingFilter` to every handler of ``logger`` (default: the root logger and MLflow's
    own, which does not propagate), once."""
    loggers = [logger] if logger is not None else [logging.getLogger(), logging.getLogger("mlflow")]
    for each in loggers:
        for handler in each.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
