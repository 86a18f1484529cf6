"""The one exception type that means "the user asked for something we cannot do".

The CLI turns it into exit code 1 and a single line; anything else is a bug (exit 2).
Keeping it in its own module lets every engine part raise it without import cycles.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a bad option: the message says what is wrong and what to do."""


class Cancelled(Exception):
    """Raised inside the pipeline when the caller's cancel event is set."""
