"""What every command shares: the one error guard, one-line usage errors, and logging.

User errors (:class:`~llmrec_gen.errors.LLMRecError`) and bad command-line usage both print one
line on stderr (``error: ...``) and exit non-zero (1 and 2); anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from llmrec_gen.errors import LLMRecError


def one_line(message: object) -> str:
    """``message`` on one line (newlines and runs of spaces collapsed)."""
    return " ".join(str(message).split())


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error to stderr and exit with ``code``."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn user errors into one-line messages and exit 1; Ctrl-C into exit 130."""
    try:
        yield
    except LLMRecError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted (finished work is kept; rerun to resume)", 130)


class OneLineUsageErrors(TyperGroup):
    """A command group whose usage errors (bad option values, unknown options) are one line.

    Click prints a multi-line usage box for them; here they read ``error: Invalid value for
    '-k': ...`` and exit 2, like every other error of the tool.
    """

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command; in standalone mode, usage errors become one line (exit 2)."""
        from typer import _click

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        except _click.exceptions.ClickException as exc:
            hint = " (see --help)" if isinstance(exc, _click.exceptions.UsageError) else ""
            typer.echo(f"error: {one_line(exc.format_message())}{hint}", err=True)
            sys.exit(exc.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)


def setup_logging(verbose: bool) -> None:
    """Warnings from libraries, our own progress messages always (info with ``--verbose``)."""
    from rich.console import Console
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, console=Console(stderr=True))],
    )
    # our own messages (engine picked, one-time model conversion, resuming) always show
    logging.getLogger("llmrec_gen").setLevel(logging.INFO)
