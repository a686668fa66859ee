"""The one error type the suite raises for bad input a user can fix."""

import re


class UserError(ValueError):
    """Bad input (label file, image folder, config, name): the message says what and where.

    The CLI prints it as one line, without a traceback, and exits non-zero.
    """


def exception_line(exc: BaseException, limit: int = 160) -> str:
    """`Type: first line` of another library's error, for a one-line UserError (colour
    codes, which some libraries put in, removed)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {(text or [''])[0][:limit]}"
