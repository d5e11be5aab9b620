"""The one exception type of the STF: every rejection of an action is an InvalidAction."""


class InvalidAction(Exception):
    """An action that the rules refuse. `code` is stable and machine-readable."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
