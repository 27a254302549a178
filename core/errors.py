"""Errors that reach the user: a message that says what was wrong and a hint that says what to do."""


class AppError(Exception):
    """An error meant for the user. `message` says what went wrong, `hint` what to do about it."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class Cancelled(Exception):
    """Raised inside a job when the user asked it to stop. A result, not an error."""
