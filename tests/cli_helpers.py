"""Running the command line inside the test process."""

from __future__ import annotations

from subnetscope.cli import main


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    """``subnetscope ARGV`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        main([str(a) for a in argv])
        rc = 0
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err
