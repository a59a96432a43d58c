"""The scratch checkout: one persistent git worktree per tree, reset to the base for each run.

Files that do not change between runs keep their mtimes (git only rewrites what differs), which is what keeps
the out-of-tree build incremental. A state file remembers what the worktree currently holds, so a run that asks
for exactly that (same base, same patch contents) touches nothing at all.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tree import Tree, git

STATE = ".git-kpipe-state.json"


@dataclass(frozen=True)
class Checkout:
    tree: Tree
    path: Path
    head: str           # commit currently checked out (base + applied patches)

    @property
    def state_file(self) -> Path:
        return self.path.parent / f"{self.path.name}.state.json"


def open_checkout(tree: Tree, log: Path | None = None) -> Checkout:
    """The tree's scratch worktree (created on first use). Caller holds ``tree.lock_path``."""
    wt = tree.worktree
    usable = (wt / ".git").exists() and git(wt, "rev-parse", "--verify", "--quiet", "HEAD", check=False).returncode == 0
    if not usable:                      # first use, or its mirror was recreated (see tree._mirror_broken)
        (wt.parent / f"{wt.name}.state.json").unlink(missing_ok=True)
        if wt.exists():
            shutil.rmtree(wt)
        wt.parent.mkdir(parents=True, exist_ok=True)
        git(tree.repo, "worktree", "prune", bare=True, check=False)
        git(tree.repo, "worktree", "add", "-f", "--detach", str(wt), tree.base, bare=True, log=log)
    head = git(wt, "rev-parse", "HEAD").stdout.strip()
    return Checkout(tree, wt, head)


def read_state(co: Checkout) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(co.state_file.read_text())
        return state
    except (OSError, ValueError):
        return {}


def write_state(co: Checkout, state: dict[str, Any]) -> None:
    tmp = co.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(co.state_file)


def clear_state(co: Checkout) -> None:
    co.state_file.unlink(missing_ok=True)


def reset_to(co: Checkout, commit: str, log: Path | None = None) -> Checkout:
    """Abort any half-done git am, force the worktree to ``commit`` and remove untracked files."""
    clear_state(co)
    gitdir = Path(git(co.path, "rev-parse", "--git-dir").stdout.strip())
    if not gitdir.is_absolute():
        gitdir = co.path / gitdir
    if (gitdir / "rebase-apply").exists():
        git(co.path, "am", "--abort", check=False, log=log)
        shutil.rmtree(gitdir / "rebase-apply", ignore_errors=True)
    git(co.path, "checkout", "-q", "-f", "--detach", commit, log=log)
    git(co.path, "clean", "-q", "-f", "-d", "-x", log=log)
    head = git(co.path, "rev-parse", "HEAD").stdout.strip()
    return Checkout(co.tree, co.path, head)


def tree_hash(co: Checkout) -> str:
    """The content id of what is checked out: base + patches, independent of commit dates."""
    return git(co.path, "rev-parse", "HEAD^{tree}").stdout.strip()


def is_clean(co: Checkout) -> bool:
    return git(co.path, "status", "--porcelain", "--untracked-files=normal").stdout.strip() == ""
