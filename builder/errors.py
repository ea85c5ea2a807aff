"""The one error type a user can cause; the CLI prints it without a traceback."""


class UserError(Exception):
    """Bad recipe, bad path or bad input: the message names the file, the key and the fix."""

    exit_code = 2


class BuildLockedError(UserError):
    """Another process is building into the same output directory."""

    exit_code = 1
