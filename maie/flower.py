"""Flower's access rules, applied to `celery -A maie flower` itself and to scripts/start-flower.sh.

Flower serves every task, the broker and remote control to whoever reaches its port, and its
defaults are no login on all interfaces. So whichever way it is started:

- auth is required: `FLOWER_BASIC_AUTH=user:password[,user2:password2]` from the environment or
  `.env` (MAIE's settings), Flower's own `--basic-auth`, or its OAuth `--auth`;
- without auth it starts only when `FLOWER_UNAUTHENTICATED=1` says so, and then only on a loopback
  address;
- the address defaults to 127.0.0.1 (`FLOWER_ADDRESS`), the port to `FLOWER_PORT` (5555).

Flower reads `FLOWER_*` variables from its environment when its command runs, after `-A maie` has
imported the app: `apply` puts the settings there, so the password never reaches a command line.

    python -m maie.flower check   # exit 2 with one line if Flower would refuse; else print the port
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import MutableMapping, Sequence

from maie.errors import ConfigError
from maie.loopback import is_loopback
from maie.settings import Settings

__all__ = ["apply", "is_flower_command", "main"]

_CREDENTIAL = re.compile(r"[^:,]+:[^,]+")
# Celery's global options that take a value (`celery -A maie --broker URL flower`).
_CELERY_VALUE_OPTIONS = frozenset(
    {"-A", "--app", "-b", "--broker", "--result-backend", "--loader", "--config", "--workdir"}
)


def is_flower_command(argv: Sequence[str]) -> bool:
    """Whether `argv` (sys.argv) runs Celery's `flower` subcommand."""
    args = list(argv[1:])
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _CELERY_VALUE_OPTIONS:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return arg == "flower"
    return False


def _option(argv: Sequence[str], *names: str) -> str | None:
    """The value of a Flower option on the command line (`--name=value` or `--name value`)."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def apply(settings: Settings, argv: Sequence[str], environ: MutableMapping[str, str]) -> list[str]:
    """Check Flower's access settings and export them to `environ`; warnings to print are returned.

    Raises ConfigError (one line) when Flower must not start.
    """
    warnings: list[str] = []
    basic = environ.get("FLOWER_BASIC_AUTH") or (
        settings.flower_basic_auth.get_secret_value() if settings.flower_basic_auth else ""
    )
    on_command_line = _option(argv, "--basic-auth", "--basic_auth") or _option(argv, "--auth")
    oauth = environ.get("FLOWER_AUTH")
    if basic:
        if not all(_CREDENTIAL.fullmatch(part) for part in basic.split(",")):
            raise ConfigError("FLOWER_BASIC_AUTH must be user:password[,user2:password2]")
        environ["FLOWER_BASIC_AUTH"] = basic
    elif not (on_command_line or oauth):
        if not settings.flower_unauthenticated:
            raise ConfigError(
                "FLOWER_BASIC_AUTH is not set: set FLOWER_BASIC_AUTH=user:password in the environment "
                "or .env (or FLOWER_UNAUTHENTICATED=1 to run Flower without authentication, on "
                "127.0.0.1 only)"
            )
        environ.pop("FLOWER_BASIC_AUTH", None)
        warnings.append(
            "Flower runs WITHOUT authentication (FLOWER_UNAUTHENTICATED=1), on a loopback address"
        )

    address = _option(argv, "--address") or environ.get("FLOWER_ADDRESS") or settings.flower_address
    if not (basic or on_command_line or oauth) and not is_loopback(address):
        raise ConfigError(
            f"Flower without authentication listens on a loopback address only, not {address!r}: "
            "set FLOWER_BASIC_AUTH"
        )
    environ["FLOWER_ADDRESS"] = address
    port = _option(argv, "--port") or environ.get("FLOWER_PORT") or str(settings.flower_port)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"FLOWER_PORT must be a port number, not {port!r}")
    environ["FLOWER_PORT"] = port
    return warnings


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m maie.flower check [flower arguments]`: the scripts' pre-flight check."""
    from maie.settings import load_settings

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "check":
        sys.stderr.write("usage: python -m maie.flower check [flower arguments]\n")
        return 2
    environ = dict(os.environ)
    try:
        for warning in apply(load_settings(), ["flower", *args[1:]], environ):
            sys.stderr.write(f"warning: {warning}\n")
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    print(environ["FLOWER_PORT"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
