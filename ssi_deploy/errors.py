"""User-facing errors: the CLI prints their message on one line and exits with ``exit_code``."""


class SSIError(Exception):
    """A user mistake or an unmet requirement, with a message that says what to do."""

    exit_code = 2


class ValidationFailed(SSIError):
    """A backend's outputs differ from the reference beyond tolerance."""

    exit_code = 1
