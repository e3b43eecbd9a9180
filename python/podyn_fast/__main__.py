"""`python -m podyn_fast` runs the command line."""

from podyn_fast.cli import main

main()
