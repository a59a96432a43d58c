"""`invoke` inside the kpipe checkout: the same tasks as the `kpipe` command, defined once in kpipe/tasks.py.
Add new tasks there (not here), so both entry points have them."""
from kpipe.tasks import *  # noqa: F401,F403  (invoke collects the Task objects of this module)
