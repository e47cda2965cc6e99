"""Keys never reach a log: the trainer routes take `?api_key=KEY` (their clients send no
headers), and a URL is what an access log writes. A filter on uvicorn's loggers rewrites
the key in every record's message and arguments before any handler formats it, so the
line says `api_key=[redacted]` whatever the log configuration (uvicorn's access log is
off by default in `serve`, on with `--access-log` or a log config)."""

from __future__ import annotations

import logging
import re

from cai_judge.api.deps import URL_KEY_PARAM

REDACTED = "[redacted]"
_KEY = re.compile(rf"(?i)({URL_KEY_PARAM}=)[^&\s\"'#]*")
# Loggers a request's URL is written by: uvicorn's access and error logs.
URL_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")


def redact(text: str) -> str:
    return _KEY.sub(rf"\g<1>{REDACTED}", text)


class RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


def install_key_redaction() -> None:
    """Idempotent: the app factory and the server both call it."""
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKeys) for f in logger.filters):
            logger.addFilter(RedactKeys())
