"""What runs in (or is read from) a booted guest and how it is judged: the suites, the verifier, the selftests and
their KTAP, kmemleak, crash signatures, changed-line coverage, known tree bugs and the expectation policy (intent)."""
