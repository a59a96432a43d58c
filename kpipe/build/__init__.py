"""Building a kernel: kconfig fragments and validation, the build itself (kernel.py) and its toolchain, the
profiles, per-object instrumentation, and `kpipe clean` of the cache."""
