"""Redaction of secrets BY VALUE: whatever text is about to be shown, every known secret's own text is
replaced by ***, wherever it appears (an error that echoes a whole settings section, a DSN a driver
repeats in its message, a traceback line). Redacting by field name alone misses those.

Known secrets: values of secret-named settings (key, password, dsn, webhook, secret, token) found in
the environment (MLCRYPTO_*), in the settings file (parsed, or line by line when it does not parse),
in any validated input handed over, and the password inside a DSN, raw and percent-decoded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

SECRET_WORDS = ("key", "password", "passwd", "dsn", "webhook", "secret", "token")
MASK = "***"
MIN_LEN = 3  # shorter "secrets" would mask ordinary text everywhere; they are masked as whole words
_LINE = re.compile(r"""^\s*"?([A-Za-z0-9_.-]*)"?\s*[:=]\s*(.*?)\s*$""")


def is_secret_name(name: str) -> bool:
    low = name.lower()
    return any(w in low for w in SECRET_WORDS)


def dsn_secrets(dsn: str) -> set[str]:
    """The password of a URL DSN (any scheme, e.g. postgresql+psycopg://u:PW@h/db) or a key=value DSN."""
    found: set[str] = set()
    try:
        pw = urlsplit(dsn).password
    except ValueError:
        pw = None
    if pw:
        found |= {pw, unquote(pw)}
    m = re.search(r"://[^/@:]*:([^@/]*)@", dsn)
    if m and m.group(1):
        found |= {m.group(1), unquote(m.group(1))}
    for m2 in re.finditer(r"password\s*=\s*('([^']*)'|[^\s&]+)", dsn, flags=re.IGNORECASE):
        found.add(m2.group(2) if m2.group(2) is not None else m2.group(1))
    return {s for s in found if s}


def _add(found: set[str], value: Any) -> None:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str) and value:
        found.add(value)
        found |= dsn_secrets(value)
        if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) > 2:
            found.add(value[1:-1])


def secrets_in(data: Any, *, under_secret: bool = False, depth: int = 0) -> set[str]:
    """Values under secret-named keys anywhere in nested dicts/lists/models, and every SecretStr."""
    found: set[str] = set()
    if depth > 50:
        return found
    if isinstance(data, SecretStr):
        _add(found, data)
    elif isinstance(data, BaseModel):
        for name in type(data).model_fields:
            found |= secrets_in(getattr(data, name), under_secret=is_secret_name(name), depth=depth + 1)
    elif isinstance(data, Mapping):
        for k, v in data.items():
            found |= secrets_in(v, under_secret=under_secret or is_secret_name(str(k)), depth=depth + 1)
    elif isinstance(data, list | tuple | set):
        for v in data:
            found |= secrets_in(v, under_secret=under_secret, depth=depth + 1)
    elif under_secret:
        _add(found, data)
    elif isinstance(data, str) and data.lstrip()[:1] in ("{", "["):
        try:  # JSON text given where a value was expected still carries its secrets
            found |= secrets_in(json.loads(data), depth=depth + 1)
        except ValueError:
            pass
    return found


def secrets_in_file(path: Path) -> set[str]:
    """Secrets of a settings file: parsed when it parses, else any `secret_name = value` line."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return set()
    found: set[str] = set()
    try:
        if path.suffix == ".toml":
            import tomllib

            found |= secrets_in(tomllib.loads(text))
        else:
            import yaml  # type: ignore[import-untyped]

            found |= secrets_in(yaml.safe_load(text))
    except Exception:  # noqa: BLE001, S110 - a malformed file: fall back to the line scan below
        pass
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and is_secret_name(m.group(1)) and m.group(2):
            _add(found, m.group(2))
            try:
                _add(found, json.loads(m.group(2)))
            except ValueError:
                pass
    return found


def known_secrets(environ: Mapping[str, str] | None = None, extra: Iterable[Any] = ()) -> set[str]:
    """Secrets of this process's configuration: MLCRYPTO_* env values of secret-named settings, the
    settings file's, and `extra` (validated inputs, settings objects)."""
    env = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in env.items():
        if name.startswith("MLCRYPTO_") and is_secret_name(name.removeprefix("MLCRYPTO_")):
            _add(found, value)
            try:
                found |= secrets_in(json.loads(value), under_secret=True)
            except ValueError:
                pass
        elif name.startswith("MLCRYPTO_"):
            # JSON text, e.g. a whole section: MLCRYPTO_EXECUTION='{"hummingbot_password": ...}'
            found |= secrets_in(value)
    path = env.get("MLCRYPTO_SETTINGS_FILE")
    if path:
        found |= secrets_in_file(Path(path))
    for item in extra:
        found |= secrets_in(item)
    return found


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value replaced by ***, longest first (a DSN before its password)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if len(secret) >= MIN_LEN:
            text = text.replace(secret, MASK)
            r = repr(secret)[1:-1]  # as it appears inside a printed repr/dict (escaped quotes, \\n, ...)
            if r != secret:
                text = text.replace(r, MASK)
        else:
            text = re.sub(rf"(?<![\w]){re.escape(secret)}(?![\w])", MASK, text)
    return text
