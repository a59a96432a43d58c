"""`kpipe bench`: kpipe against the raw commands (measure.py), the LAVA row (lava.py) and the pure part shared by
both (rows.py: rows, plan, resume, bench.json)."""
