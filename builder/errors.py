"""The one error type a user can cause; the CLI prints it without a traceback."""


class UserError(Exception):
    """Bad recipe, bad path or bad input: the message names the file, the key and the fix."""

    exit_code = 2


class BuildLockedError(UserError):
    """Another process is building into the same output directory."""

    exit_code = 1


class BuildStoppedError(UserError):
    """Bad input met after a build had started (a source's file broken mid-way): the build
    is unfinished and resumable, so not the usage error's "nothing changed" exit 2."""

    exit_code = 1
