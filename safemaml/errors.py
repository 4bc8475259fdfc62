"""The exceptions safemaml raises on purpose: bad input (exit 2) and faults (exit 1).

The CLI turns either into a one-line message that names the cause and the fix; library
callers can catch them (both are SafeMamlError).
"""


class SafeMamlError(ValueError):
    """Bad input to safemaml: an unknown name, a wrong shape, a value out of range."""

    exit_code = 2


class RunFault(SafeMamlError):
    """Something went wrong while doing valid work: a full disk, a read-only folder, a run that
    diverged. Whatever was saved before the fault is left intact."""

    exit_code = 1
