"""Tag checks beside checkpatch's own messages about the same tags (the real 5.10 tree's checkpatch.pl, run
with --show-types). The tag checks on a tiny tree: tests/unit/test_tags.py."""
from __future__ import annotations

import json

import pytest

from kernel_fixture import git, make_repo, private_cache  # noqa: F401  (autouse: a private KPIPE_CACHE)
from kpipe.source import tags
from kpipe.errors import InfraError
from kpipe.source.patches import Series, read_patch

from test_tags import AUTHOR, FILES, _patch  # noqa: F401  (shared with the fast tier)


# ------------------------------------------------------------------ checkpatch's own messages (the 5.10 tree's)


def test_checkpatch_show_types_messages_are_surfaced_beside_kpipes(tmp_path, tree510):
    from kpipe.source import checkpatch
    from kpipe.workflows.pipeline import locked_checkout
    from kpipe.source.tree import git as kgit, open_user_tree
    # what checkpatch checks for at the top of a kernel tree (top_of_kernel_tree), and its own data files
    files = {**FILES, **{f: "" for f in ("COPYING", "CREDITS", "Kbuild", "MAINTAINERS", "README")},
             **{f"{d}/.keep": "" for d in ("Documentation", "arch", "drivers", "fs", "include", "init", "ipc",
                                            "kernel", "lib")}}
    for f in ("scripts/checkpatch.pl", "scripts/spelling.txt", "scripts/const_structs.checkpatch"):
        files[f] = kgit(tree510.repo, "show", f"{tree510.base}:{f}", bare=True).stdout
    repo = make_repo(tmp_path / "linux", files, "mm: add foo")
    (repo / "mm/foo.c").write_text("int a = 1;\n")
    git(repo, "commit", "-q", "-am", "mm: tune foo")
    added = git(repo, "rev-parse", "HEAD~1").stdout.strip()
    out = tmp_path / "p"
    out.mkdir()
    good = _patch(repo, out, 1, f'Fixes: {added[:12]} ("mm: add foo")\nSigned-off-by: {AUTHOR}')
    bad = _patch(repo, out, 2, 'Fixes: 0123456789ab ("mm: never was")\nSigned-off-by: Other <other@example.org>')
    series = Series((read_patch(good), read_patch(bad)), "--patch")
    # a checkpatch that stops before checking ("Must be run from the top-level dir. of a kernel tree") is no pass
    no_top = make_repo(tmp_path / "not-top", {k: v for k, v in files.items() if k != "MAINTAINERS"})
    with locked_checkout(open_user_tree(str(no_top))) as co, pytest.raises(InfraError, match="did not check"):
        checkpatch.run_checkpatch(co, series, tmp_path / "checkpatch.log")
    tree = open_user_tree(str(repo))
    with locked_checkout(tree) as co:
        cp = checkpatch.run_checkpatch(co, series, tmp_path / "checkpatch.log")
        res = tags.check_series(series, co.path, co.tree.base, cp)
    assert cp[0]["errors"] == 0 and cp[1]["errors"] == 1, json.dumps(cp, indent=1)
    assert res[0].problems == () and res[0].checkpatch == ()
    assert [m.split(":", 2)[:2] for m in res[1].checkpatch] == [["WARNING", " UNKNOWN_COMMIT_ID"],
                                                                ["ERROR", " NO_AUTHOR_SIGN_OFF"]], res[1].checkpatch
    assert "Missing Signed-off-by: line by nominal patch author 'Test Author <author@example.org>'" in \
        res[1].checkpatch[1]
    assert [(p.tag, p.severity) for p in res[1].problems] == [("Signed-off-by", "error"), ("Fixes", "error")]
