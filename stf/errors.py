"""The STF's exceptions: every rejection of an action is an InvalidAction; StateCorrupted is
a broken invariant of the state itself (never a receipt: the node stops)."""


class InvalidAction(Exception):
    """An action that the rules refuse. `code` is stable and machine-readable."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class StfInternalError(Exception):
    """A broken invariant inside the STF: a bug, never a verdict on the action. It is not an
    InvalidAction on purpose: the node stops on it (fail-stop) instead of writing a receipt."""


class StateCorrupted(StfInternalError):
    """The state breaks an invariant the STF keeps (a bug or a damaged store)."""


def check_internal(ok: bool, detail: str) -> None:
    """The STF's replacement for `assert` (which `python -O` strips)."""
    if not ok:
        raise StfInternalError(detail)
