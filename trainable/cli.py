"""Command-line plumbing shared by every entry point: one-line errors with exit status 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from trainable.errors import NonFiniteLossError, UserError

__all__ = ["USAGE_ERROR", "ArgumentParser", "UserError", "run_main", "setup_logging"]

USAGE_ERROR = 2


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, with a pointer to --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def run_main(main: Callable[[Sequence[str] | None], int | None], argv=None) -> None:
    """Run a CLI ``main``: user errors print one line to stderr and exit with status 2."""
    setup_logging()
    try:
        code = main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
