"""Copy standard input to FILE, rotating it: the console output of a detached process.

    python scripts/lib/rotate_out.py FILE MAX_BYTES BACKUPS   # copy, rotating at MAX_BYTES
    python scripts/lib/rotate_out.py --new FILE BACKUPS       # rotate FILE now when it is not empty

scripts/lib/procs.sh pipes a detached worker's, Flower's or vLLM server's output through this, so
`logs/<name>.out` never grows without bound. Each start begins a new FILE (`--new`: the previous
one becomes FILE.1, ...); FILE rotates when a line would take it past MAX_BYTES; BACKUPS old files
are kept.
The one writer of its FILE, it needs no lock. Standard library only: it must run whatever the state
of MAIE's own settings, and it exits when the process it follows closes its output.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import BinaryIO


def rotate(path: Path, backups: int) -> None:
    if backups <= 0:
        path.unlink(missing_ok=True)
        return
    for i in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
    if path.exists():
        os.replace(path, path.with_name(f"{path.name}.1"))


def copy(source: BinaryIO, path: Path, max_bytes: int, backups: int) -> None:
    out = open(path, "ab")
    try:
        for line in source:
            if out.tell() > 0 and out.tell() + len(line) > max_bytes:
                out.close()
                rotate(path, backups)
                out = open(path, "ab")
            out.write(line)
            out.flush()
    finally:
        out.close()


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "--new" and argv[3].isdigit():
        path = Path(argv[2])
        if path.exists() and path.stat().st_size > 0:
            rotate(path, int(argv[3]))
        return 0
    if len(argv) != 4 or not argv[2].isdigit() or not argv[3].isdigit():
        sys.stderr.write("usage: rotate_out.py FILE MAX_BYTES BACKUPS | --new FILE BACKUPS\n")
        return 2
    # Outlive the terminal and Ctrl-C like the detached process it follows; EOF ends it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    copy(sys.stdin.buffer, Path(argv[1]), max(1, int(argv[2])), int(argv[3]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
