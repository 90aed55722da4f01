"""A dbt profile rendered without dbt, where that gives exactly what dbt gives.

Importing dbt's ProfileRenderer costs about a second on every pyml command (most of a
command's startup); a profile whose only Jinja is env_var() with literal arguments, the
common case, does not need it. Anything else is left to dbt (pyml.dbt.project).
"""

from __future__ import annotations

import os
import re
from datetime import date
from typing import Any

# A string whose only Jinja is env_var('NAME') or env_var('NAME', 'default') with
# literal arguments renders without dbt: importing dbt's renderer costs about a second, on
# every command. Anything else (filters, other calls, statements, comments, newlines, a
# missing variable, a secret one) is rendered by dbt itself. tests/test_first_run.py checks
# the two agree on generated profiles.
_RENDER_CHARS = re.compile(r"({[{%#]|[#}%]})")  # dbt's test for "has Jinja" (dbt.clients.jinja)
_ENV_VAR = re.compile(r"""\{\{\s*env_var\(\s*(['"])([A-Za-z_][A-Za-z0-9_]*)\1\s*"""
                      r"""(?:,\s*(['"])([^'"\\{}%#\n\r]*)\3\s*)?\)\s*\}\}""")
_SECRET_PREFIX = "DBT_ENV_SECRET_"


class NeedsDbt(Exception):
    """The value is beyond the fast path: dbt renders the profile."""


def render_fast(value: Any) -> Any:
    """`value` rendered as dbt's ProfileRenderer would, or NeedsDbt."""
    if isinstance(value, dict):
        return {k: render_fast(v) for k, v in value.items()}
    if isinstance(value, list):
        return [render_fast(v) for v in value]
    if isinstance(value, date):  # datetime too, as dbt's render_value
        return value.isoformat()
    if not isinstance(value, str):
        if value is None or isinstance(value, bool | int | float):
            return value
        raise NeedsDbt
    if "\n" in value or "\r" in value:  # Jinja normalises and trims newlines
        raise NeedsDbt

    def env(match: re.Match[str]) -> str:
        name, default = match.group(2), match.group(4)
        if name.startswith(_SECRET_PREFIX):
            raise NeedsDbt
        found = os.environ.get(name, default)
        if found is None:  # dbt's own error names the variable
            raise NeedsDbt
        return found

    # A brace touching an env_var() call ('{{{env_var(...)}}') is Jinja's to parse, not ours.
    marked = _ENV_VAR.sub("\x00", value)
    if ("\x00" in value or _RENDER_CHARS.search(marked) or "{\x00" in marked
            or "\x00}" in marked):
        raise NeedsDbt
    return _ENV_VAR.sub(env, value)
