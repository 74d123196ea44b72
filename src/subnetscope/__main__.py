"""``python -m subnetscope``."""

from .cli import main

main()
