"""`python3 -m kpipe` is the `kpipe` command."""
from .cli import main

main()
