"""`invoke` inside the kpipe checkout: the same tasks as the `kpipe` command, defined once in kpipe/cli/tasks.py.
Add new tasks THERE (not here): a task defined only in this file is seen by `invoke` but not by `kpipe`."""
from kpipe.cli.tasks import *  # noqa: F401,F403  (invoke collects the Task objects of this module)
from kpipe.cli.tasks import VERIFY_ARGS, _configured, _opts, _resolved, _run  # noqa: F401
