"""Why a value or an identifier was refused.

One exception family for the SDK path (the reason goes into the dead letter) and the CSV
importer (the reason goes into the failed-rows file, I15). Reasons are short sentences a
staff member can act on and never echo the rejected input: dead letters and logs must not
collect e-mail addresses or phone numbers.
"""


class Rejected(Exception):
    """A refused input: `code` is for machines, `reason` for staff."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, reason={self.reason!r})"


class ValueRejected(Rejected):
    """A value does not have the format of its key's type (I9)."""

    def __init__(self, reason: str) -> None:
        super().__init__("invalid_value", reason)
