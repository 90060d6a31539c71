"""Auto-checkers for the book's exercises.

Each chapter has a module ``ebflow_lite.exercises.chNN`` whose functions take a learner's
answer (usually a function) and return a :class:`CheckResult`: truthy when correct, with a
hint when not. A checker never raises: an unfinished stub (``raise NotImplementedError``) or
a crash becomes a failed result with a message, so an exercise notebook always runs to the
end.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CheckResult:
    """The verdict of a checker."""

    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        mark = "correct" if self.passed else "not yet"
        return f"[{mark}] {self.message}"

    def _repr_markdown_(self) -> str:
        mark = "**Correct.**" if self.passed else "**Not yet.**"
        return f"{mark} {self.message}"


def passed(message: str = "well done.") -> CheckResult:
    """A passing result."""
    return CheckResult(True, message)


def failed(hint: str) -> CheckResult:
    """A failing result carrying a hint."""
    return CheckResult(False, hint)


def checker(fn: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
    """Decorate a checker so that stubs and crashes become failed results, not exceptions."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> CheckResult:
        try:
            result = fn(*args, **kwargs)
        except NotImplementedError:
            return failed(
                "not implemented yet: replace `raise NotImplementedError` with your code."
            )
        except AssertionError as err:
            return failed(str(err) or "the answer does not match.")
        except Exception as err:  # a learner's code may fail in any way
            return failed(f"your code raised {type(err).__name__}: {err}")
        if not isinstance(result, CheckResult):
            raise TypeError(f"checker {fn.__name__} must return a CheckResult")
        return result

    return wrapped


def show_source(obj: object) -> None:
    """Print the source of a reference solution (used in the collapsed solution blocks)."""
    print(inspect.getsource(obj))  # type: ignore[arg-type]


__all__ = ["CheckResult", "checker", "failed", "passed", "show_source"]
