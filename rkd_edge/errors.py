"""User-facing errors: one clear line, exit code 2, no traceback."""


class UserError(Exception):
    """A problem the user can fix (bad input, missing file); the CLI prints it as one line, exit 2.

    Args:
        message: What is wrong and what to do about it, in one sentence.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message.strip().splitlines()[0] if message.strip() else "invalid input")
