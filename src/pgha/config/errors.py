"""The one exception configuration loading raises.

Rules
1. ``ConfigError.errors`` lists every problem found, each ``"<key.path>: <what was expected>"`` (or
   ``"<file>: ..."`` for a file that cannot be read or parsed); ``str()`` joins them with newlines.
2. No message ever contains a secret (passwords are never echoed back).
"""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration cannot be used; ``errors`` says why, one line per problem."""

    def __init__(self, errors: list[str] | str) -> None:
        self.errors: list[str] = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)
