"""The patch series and the tree it goes on: kernel trees (Debian source packages, users' git trees), the scratch
checkout, series intake (files, mbox, --range, --thread with b4, revisions) and application, and the checks read
from the patches themselves (checkpatch, tags, MAINTAINERS)."""
