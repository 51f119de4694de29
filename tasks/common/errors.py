"""Errors that mean "the input is wrong", reported to the user without a traceback (exit code 2)."""


class InputError(ValueError):
    """Bad user input (a missing path, a malformed file, an unknown class); the message names it."""
