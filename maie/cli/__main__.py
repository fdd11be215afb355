"""`python -m maie.cli`: the `maie` command."""

from maie.cli import main

main()
