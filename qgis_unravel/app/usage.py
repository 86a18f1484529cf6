"""The error of a bad command line or input, shared by the commands: printed as one line."""


class UsageError(ValueError):
    """A problem with the command line or its inputs; printed as one line."""
