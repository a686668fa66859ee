"""The one error type the suite raises for bad input a user can fix."""


class UserError(ValueError):
    """Bad input (label file, image folder, config, name): the message says what and where.

    The CLI prints it as one line, without a traceback, and exits non-zero.
    """
