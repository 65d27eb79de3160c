"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class TrilemmaError(Exception):
    """Bad input from the user (missing/corrupt data, bad config, wrong checkpoint); never a bug."""
