"""Library errors in command-line words: the one table from library terms to flags.

Library hints name the argument to change in backticks (``give a directory for `resume```); the command
line prints the flag that sets it instead (``give a directory for --resume``). Every such wording is
listed here and nowhere else; :func:`cli_line` applies them to the one line ``subnetscope`` prints.
"""

from __future__ import annotations

from ..errors import SubnetscopeError

#: (library wording, command-line wording), applied in order to the message and the hint
FLAG_ADVICE: tuple[tuple[str, str], ...] = (
    ("`resume`", "--resume"),
    ("`overwrite=True`", "--overwrite"),
    ("`strict=True`", "--strict"),
    ("`ulp=True`", "--ulp"),
    ("rank fewer matrices: give `sample` or `layers`", "use --rank-sample or --rank-layers"),
    ("`layers`: ", "--rank-layers: "),
    ("`sample` ", "--rank-sample "),
    ("`device='cpu'` or `device='auto'`", "--device cpu or auto"),
    ("`device='cpu'`", "--device cpu"),
    ("use e.g. `k=16`", "use e.g. --spectrum 16"),
    ("(or write the JSON to stdout)", "(--format json prints the report on stdout)"),
    (
        "a file written by `MaskFile` or `compare(mask_out=...)`",
        "a file written by `subnetscope mask` or `compare --mask-out`",
    ),
)


def cli_text(text: str) -> str:
    """``text`` with every library wording of :data:`FLAG_ADVICE` replaced by its flag."""
    for library, flag in FLAG_ADVICE:
        text = text.replace(library, flag)
    return text


def cli_line(e: SubnetscopeError) -> str:
    """The error's message and hint as the one line the command line prints, in flags."""
    return cli_text(e.one_line())
