"""kpipe: a kernel patch build-and-verify pipeline."""
