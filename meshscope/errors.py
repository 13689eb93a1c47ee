"""Errors that carry a message meant for a person: the CLI prints them as one line, the API as 4xx JSON."""


class UserError(Exception):
    """Bad input (a file, an argument, a setting): shown as one line, exit code 2 / HTTP 400."""


class CaptureError(UserError):
    """A capture that cannot be read at all (wrong magic, empty, unsupported link type)."""
