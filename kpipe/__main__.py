"""`python3 -m kpipe` is the `kpipe` command."""
from .program import main

main()
