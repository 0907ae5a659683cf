"""User-facing errors.

Everything that is the user's fault (a bad option, a malformed config, a missing checkpoint) raises
:class:`MetaloopError`. The command line prints its message on one line and exits with code 2; Python
callers can catch it.
"""

from __future__ import annotations


class MetaloopError(ValueError):
    """A problem with the user's input: the message names the file, field or option at fault."""


class MetaloopWarning(UserWarning):
    """Something in the user's input that makes a result misleading but not impossible (a test class that
    is also a training class, the same example in a task's support and query sets). The command line
    prints its message on one line, ``metaloop: warning: …``."""
