"""The STF's exceptions: every rejection of an action is an InvalidAction; StateCorrupted is
a broken invariant of the state itself (never a receipt: the node stops)."""


class InvalidAction(Exception):
    """An action that the rules refuse. `code` is stable and machine-readable."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class StateCorrupted(Exception):
    """The state breaks an invariant the STF keeps (a bug or a damaged store): not a verdict
    on the action, so it must never become a failed receipt."""
