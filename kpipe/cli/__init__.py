"""The command: the invoke tasks (tasks.py) behind both `kpipe` (program.py) and `invoke`, running a task with the
exit-code contract (run.py), the stage tasks (commands.py), the config system (settings.py) and `kpipe setup`."""
