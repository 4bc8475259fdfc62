"""The one exception type safemaml raises for bad input.

The CLI turns it into a one-line message and exit status 2; library callers can catch it.
"""


class SafeMamlError(ValueError):
    """Bad input to safemaml: an unknown name, a wrong shape, a value out of range."""
