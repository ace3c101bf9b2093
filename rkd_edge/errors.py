"""User-facing errors: one clear line, exit code 2, no traceback."""

import reprlib


class UserError(Exception):
    """A problem the user can fix (bad input, missing file); the CLI prints it as one line, exit 2.

    Args:
        message: What is wrong and what to do about it, in one sentence.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message.strip().splitlines()[0] if message.strip() else "invalid input")


def first_sentence(exc: BaseException, limit: int = 160) -> str:
    """The first sentence of a library's error (its first line, cut at a word if still long): the part a
    one-line message can quote. The exception's type when it says nothing."""
    text = str(exc).strip().splitlines()[0].strip() if str(exc).strip() else ""
    head = text.split(". ")[0].rstrip(".")
    if len(head) > limit:
        head = head[:limit].rsplit(" ", 1)[0] + " ..."
    return head or type(exc).__name__


_SHORT = reprlib.Repr()  # keyword arguments only from Python 3.12
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 4, 40, 40


def short_repr(value) -> str:
    """A value for a message, cut short (a hostile value may be huge)."""
    return _SHORT.repr(value)


def one_line(text: str) -> str:
    """``text`` with its control characters escaped (``\\n``, ``\\x1b``): a path or value that holds a
    newline or a terminal escape stays inside the one line it is quoted in."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
