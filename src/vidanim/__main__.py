"""`python -m vidanim` is the `vidanim` command."""

from vidanim.cli import main

main()
