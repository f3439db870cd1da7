"""``python -m tl_med.cli``."""

from tl_med.cli import main

main()
