"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(Exception):
    """A mistake in the user's input: the CLI prints its message on one line and exits with code 2."""
