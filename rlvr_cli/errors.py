"""Errors a user can fix. The CLI prints their message on one line and exits with code 2 (no traceback)."""


class UserError(Exception):
    """Bad input: a config value, a missing file, an unknown name."""
