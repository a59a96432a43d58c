"""`python3 -m kpipe` is the `kpipe` command."""
from .cli.program import main

main()
