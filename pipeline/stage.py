"""What every stage command shares: logging set-up and clean reporting of user errors."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

import typer

from pipeline.errors import PipelineError
from pipeline.io import describe_os_error


def stage_app(help: str) -> typer.Typer:
    """A typer app for one stage, with tracebacks left plain (they only appear for real bugs)."""
    return typer.Typer(help=help, add_completion=False, pretty_exceptions_enable=False)


@contextlib.contextmanager
def stage_run(name: str) -> Iterator[logging.Logger]:
    """Run a stage body: log to stderr, and turn a :class:`PipelineError` into one error line.

    A user error (bad params, bad data, a missing or corrupt input) exits with status 1 and no
    traceback, and so does an ``OSError`` (a full disk, no permission, an unreadable file),
    reported as the file and the system's reason (its traceback is logged at DEBUG level);
    anything else is a bug and propagates with its traceback.
    """
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    log = logging.getLogger(f"stages.{name}")
    try:
        yield log
    except PipelineError as e:
        print(f"error: {name}: {e}", file=sys.stderr)
        raise typer.Exit(code=1) from None
    except OSError as e:
        log.debug("the OS error's traceback", exc_info=True)
        print(f"error: {name}: {describe_os_error(e)}", file=sys.stderr)
        raise typer.Exit(code=1) from None
