"""kpipe on LAVA: the same kernels and tests as LAVA v2 jobs.

  ramdisk.py   kpipe's guest image + the test payload as one cpio.newc (LAVA appends its overlay to it)
  job.py       job definition and local device dictionary from jinja2 templates; schema validation
  runner.py    lava-run on this machine
  logparse.py  LAVA's YAML log -> console lines, test blocks, LAVA results
  collect.py   parsed log -> kpipe's ArchResult (same parsers and verdict as verify)
  submit.py    lavacli submission to a server (or the local lab: kpipe.lava.lab)
  workflow.py  `kpipe lava`
  premerge.py  `kpipe premerge --lab`: premerge's two sides as LAVA jobs (workflows.flows.Sides)
"""
