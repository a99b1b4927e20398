"""No credential in a log line: a filter on the service's and uvicorn's loggers.

The API takes credentials only in headers and bodies (the job WebSocket included), so no
request line should carry one; this is the second belt for a client that puts one in a URL
anyway (``?token=``, ``?api_key=``) or an error message that quotes one. Access tokens (JWTs),
API keys (``amc_...``) and ``token``/``key``/``password``/``secret`` query parameters are
replaced by ``[redacted]`` before a record is formatted.
"""

from __future__ import annotations

import logging
import re

_PATTERNS = (
    # query parameters that name a secret
    re.compile(r"(?i)([?&](?:access_|refresh_)?(?:token|api_key|apikey|key|password|secret)=)[^&\s\"']*"),
    # a JWT (three base64url parts, the first a JSON header)
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    # our API keys
    re.compile(r"amc_[A-Za-z0-9_-]{16,}"),
)
REDACTED = "[redacted]"
LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn", "app", "app.service")


def redact(text: str) -> str:
    text = _PATTERNS[0].sub(lambda m: m.group(1) + REDACTED, text)
    for p in _PATTERNS[1:]:
        text = p.sub(REDACTED, text)
    return text


class RedactCredentials(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def install() -> None:
    """Add the filter to the loggers that write request lines and errors (idempotent), and
    to their handlers, so records propagated from child loggers are filtered too."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        targets: list[logging.Filterer] = [logger, *logger.handlers]
        for t in targets:
            if not any(isinstance(f, RedactCredentials) for f in t.filters):
                t.addFilter(RedactCredentials())
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactCredentials) for f in handler.filters):
            handler.addFilter(RedactCredentials())
