"""What every linreg console script shares: user errors end in one line, never a traceback."""

from __future__ import annotations

import sys
from typing import Any

import click

from serve.errors import LinregError

CONTEXT = {"help_option_names": ["-h", "--help"]}


class OneLineErrors(click.Command):
    """A click command whose user errors print as one ``PROG: error: ...`` line on stderr.

    click's own usage errors print a usage block; the conventions ask for one line, so bad flags,
    bad files and library errors (:class:`LinregError`) all end the same way.
    """

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        prog = prog_name or self.name or "linreg"
        try:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        except click.exceptions.Exit as e:  # --help, --version
            sys.exit(e.exit_code)
        except click.ClickException as e:
            _fail(prog, e.format_message(), e.exit_code)
        except LinregError as e:
            _fail(prog, str(e), e.exit_code)
        except click.Abort:
            _fail(prog, "aborted", 1)
        except KeyboardInterrupt:
            _fail(prog, "interrupted", 130)
        except BrokenPipeError:  # `linreg-predict ... - | head`
            sys.exit(0)


def _fail(prog: str, message: str, code: int) -> None:
    message = " ".join(message.split())  # one line, whatever the message
    click.echo(f"{prog}: error: {message}", err=True)
    sys.exit(code)
