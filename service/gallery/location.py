"""What a gallery location is - a folder or a PostgreSQL URL - and how it is shown."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DATABASE_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(location: str | Path) -> bool:
    """True for a PostgreSQL URL, False for a folder."""
    return str(location).startswith(DATABASE_SCHEMES)


def shown(location: str | Path) -> str:
    """The location as logs and messages show it: a URL without its password."""
    location = str(location)
    if not is_database_url(location):
        return location
    parts = urlsplit(location)
    if parts.password is None:
        return location
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
