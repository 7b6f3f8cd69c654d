"""One error hierarchy for the whole product.

Each error carries a code; the gRPC edge maps it once to a status (service interceptor) and the CLI
maps it once to an exit code. Pure cores raise these for *broken* input (unknown model, impossible
quantization); "does not fit" is never an error, it is a Plan with reasons.
"""

from __future__ import annotations


class FleetError(Exception):
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(FleetError):
    """Input that can never work as given (bad name, TP 3 for 64 heads, awq on llama.cpp)."""

    code = "invalid_argument"


class NotFound(FleetError):
    code = "not_found"


class AlreadyExists(FleetError):
    code = "already_exists"


class Unauthenticated(FleetError):
    code = "unauthenticated"


class PermissionDenied(FleetError):
    code = "permission_denied"


class FailedPrecondition(FleetError):
    """The request is fine but the fleet's state refuses it now (nothing fits, node busy)."""

    code = "failed_precondition"


class Unavailable(FleetError):
    """Something the request needs is not reachable now (a node not connected); trying later may work."""

    code = "unavailable"


class TimedOut(FleetError):
    code = "deadline_exceeded"
