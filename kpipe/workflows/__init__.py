"""The workflows users run (flows.py: verify, premerge, bisect, warnings) over the runner, the pipeline of stages up
to a built kernel, premerge's comparison, the compile checks and the bisection engine."""
