"""Kernel trees: ``debian:<ver>`` source packages and users' git trees, each mirrored into a bare repository
in kpipe's cache, with one persistent scratch worktree per tree.

The user's tree is only ever read (rev-parse, fetch from it, status with --no-optional-locks): no checkout,
stash, index, ref or file of it is written. Everything kpipe changes lives in its cache.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from .. import cache, proc
from .aptsrc import PrivateApt
from ..errors import InfraError, UsageError
from ..progress import note

# debian:<name> -> (suite, source package). Data, not code: adding a tree is adding a row.
DEBIAN_TREES = {
    "5.10": ("bullseye", "linux-source-5.10"),
    "6.1": ("bookworm", "linux-source-6.1"),
    "6.12": ("trixie", "linux-source-6.12"),
}
DEFAULT_TREE = "debian:5.10"
GIT_ID = ["-c", "user.name=kpipe", "-c", "user.email=kpipe@localhost", "-c", "advice.detachedHead=false",
          "-c", "gc.auto=0", "-c", "core.quotePath=false"]
READONLY_ENV = {"GIT_OPTIONAL_LOCKS": "0"}


@dataclass(frozen=True)
class Tree:
    spec: str            # as given: debian:5.10 or a path
    ident: str           # cache id: debian-5.10 / user-<hash>
    repo: Path           # kpipe's bare repository
    base: str            # the base commit (resolved sha)
    base_label: str      # tag or rev as the user named it
    version: str = ""    # Debian package version (debian trees)
    user_path: Path | None = None

    @property
    def worktree(self) -> Path:
        return cache.cache_root() / "work" / self.ident

    @property
    def lock_path(self) -> Path:
        return cache.cache_root() / "locks" / f"tree-{self.ident}.lock"


def git(repo_or_dir: Path, *args: str, log: Path | None = None, check: bool = True, timeout: float = 1800,
        env: dict[str, str] | None = None, bare: bool = False) -> subprocess.CompletedProcess[str]:
    flag = "--git-dir" if bare else "-C"
    return proc.run(["git", *GIT_ID, flag, str(repo_or_dir), *args], log=log, check=check, timeout=timeout,
                    env=env, what=f"git {args[0]}")


# ---------------------------------------------------------------- debian trees

def _debian_ident(name: str) -> str:
    return f"debian-{name}"


def fetch_debian(name: str, log: Path | None = None) -> Tree:
    """Download, unpack and commit Debian's linux-source-<name> once per machine (cached)."""
    if name not in DEBIAN_TREES:
        raise UsageError(f"unknown Debian tree debian:{name}",
                         fix=f"use one of: {', '.join('debian:' + k for k in DEBIAN_TREES)}, or a path to a git tree")
    suite, package = DEBIAN_TREES[name]
    ident = _debian_ident(name)
    repo = cache.cache_dir("trees") / f"{ident}.git"
    with cache.file_lock(cache.cache_root() / "locks" / f"fetch-{ident}.lock", f"fetch of debian:{name}"):
        cache.sweep_stale(repo.parent)
        tag = _debian_tag(repo)
        if tag is None:
            _make_debian_repo(name, suite, package, repo, log)
            tag = _debian_tag(repo)
        if tag is None:
            raise InfraError(f"the cached tree {repo} has no debian/* tag", fix=f"remove {repo} and run again")
    base = git(repo, "rev-parse", f"{tag}^{{commit}}", bare=True).stdout.strip()
    return Tree(spec=f"debian:{name}", ident=ident, repo=repo, base=base, base_label=tag,
                version=tag.split("/", 1)[1])


def _debian_tag(repo: Path) -> str | None:
    if not (repo / "HEAD").is_file():
        return None
    cp = git(repo, "tag", "--list", "debian/*", bare=True, check=False)
    tags = cp.stdout.split() if cp.returncode == 0 else []
    return tags[-1] if tags else None


def _make_debian_repo(name: str, suite: str, package: str, repo: Path, log: Path | None) -> None:
    note(f"fetching debian:{name} ({package} from Debian {suite}, through this machine's apt mirror)")
    with cache.new_entry(repo) as tmp:
        apt = PrivateApt(cache.cache_dir("apt", suite), suite)
        apt.update(log)
        version = apt.candidate(package)
        deb = apt.download(package, tmp / "deb", log)
        proc.run(["dpkg-deb", "-x", str(deb), str(tmp / "pkg")], log=log, timeout=600, what="dpkg-deb")
        tarballs = sorted((tmp / "pkg/usr/src").glob("linux-source-*.tar.*"))
        if not tarballs:
            raise InfraError(f"{deb.name} holds no linux-source tarball under usr/src")
        src = tmp / "src"
        src.mkdir()
        proc.run(["tar", "-xf", str(tarballs[0]), "-C", str(src), "--strip-components=1"], log=log,
                 timeout=1200, what="tar")
        shutil.rmtree(tmp / "pkg")
        shutil.rmtree(tmp / "deb")
        dropped = _drop_debian_ignore_all(src / ".gitignore")
        gitdir = tmp / "repo.git"
        proc.run(["git", "init", "-q", "--bare", str(gitdir)], log=log, what="git init")
        env = {"GIT_DIR": str(gitdir), "GIT_WORK_TREE": str(src),
               "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z"}
        proc.run(["git", *GIT_ID, "add", "-A"], env=env, log=log, timeout=1800, what="git add")
        msg = (f"Debian {package} {version}\n\nUnpacked from {deb.name} (suite {suite}) by kpipe."
               + ("\nDropped Debian's top-level '/*' .gitignore rule so git sees the sources." if dropped else ""))
        proc.run(["git", *GIT_ID, "commit", "-q", "-m", msg], env=env, log=log, timeout=600, what="git commit")
        proc.run(["git", *GIT_ID, "tag", f"debian/{version}"], env=env, log=log, what="git tag")
        shutil.rmtree(src)
        # the entry's content is the bare repository itself
        for p in gitdir.iterdir():
            p.rename(tmp / p.name)
        gitdir.rmdir()
    note(f"debian:{name} is Debian {package} {version}, cached in {repo}")


def _drop_debian_ignore_all(gitignore: Path) -> bool:
    """Debian's tree ignores every top-level path (rule '/*' under 'Debian packaging'): drop that rule."""
    if not gitignore.is_file():
        return False
    lines = gitignore.read_text().splitlines()
    kept = [ln for ln in lines if ln.strip() not in ("/*", "!/debian/")]
    if kept == lines:
        return False
    gitignore.write_text("\n".join(kept) + "\n")
    return True


# ---------------------------------------------------------------- user trees

def open_user_tree(path: str, base: str = "HEAD") -> Tree:
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"tree path {path} does not exist",
                         fix="pass --tree PATH of a kernel git checkout, or --tree debian:5.10")
    p = p.resolve()
    top = proc.run(["git", "-C", str(p), "rev-parse", "--show-toplevel"], env=READONLY_ENV, check=False)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != p:
        raise UsageError(f"{p} is not the top of a git tree",
                         fix="pass the top folder of a kernel git checkout "
                             "(where `git rev-parse --show-toplevel` points)")
    rev = proc.run(["git", "-C", str(p), "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"],
                   env=READONLY_ENV, check=False)
    if rev.returncode != 0:
        raise UsageError(f"--base {base} is not a commit in {p}",
                         fix="pass --base with a commit, tag or branch of that tree")
    sha = rev.stdout.strip()
    for must in ("Makefile", "Kconfig", "mm"):
        if proc.run(["git", "-C", str(p), "cat-file", "-e", f"{sha}:{must}"], env=READONLY_ENV, check=False).returncode:
            raise UsageError(f"{p} at {base} is not a kernel tree (no {must})",
                             fix="pass the top folder of a Linux kernel git tree")
    dirty = proc.run(["git", "--no-optional-locks", "-C", str(p), "status", "--porcelain", "--untracked-files=normal"],
                     env=READONLY_ENV, check=False).stdout.strip()
    if dirty:
        note(f"{p} has uncommitted changes: they are not part of this run (kpipe uses the commit {sha[:12]}; "
             "your tree is not touched)")
    ident = "user-" + hashlib.sha256(str(p).encode()).hexdigest()[:12]
    repo = cache.cache_dir("trees") / f"{ident}.git"
    with cache.file_lock(cache.cache_root() / "locks" / f"fetch-{ident}.lock", f"mirror of {p}"):
        cache.sweep_stale(repo.parent)
        if (repo / "HEAD").is_file():
            _sync_shallow(repo, p)
            broken = _mirror_broken(repo)
            if broken:
                note(f"kpipe's mirror of {p} refers to commits your tree no longer has ({broken}; a rebase and gc "
                     "removed them): recreating the mirror and its scratch checkout")
                shutil.rmtree(repo)
        if not (repo / "HEAD").is_file():
            with cache.new_entry(repo) as tmp:
                proc.run(["git", "init", "-q", "--bare", str(tmp)], what="git init")
                alt = tmp / "objects/info/alternates"
                alt.parent.mkdir(parents=True, exist_ok=True)
                # borrow the user's objects read-only (like clone --shared): nothing is copied or written there
                alt.write_text(str(_objects_dir(p)) + "\n")
        _sync_shallow(repo, p)
        git(repo, "fetch", "-q", "--no-tags", "--no-write-fetch-head", "--update-head-ok", str(p),
            "+refs/heads/*:refs/user/heads/*", "+refs/tags/*:refs/user/tags/*", bare=True)
        git(repo, "update-ref", f"refs/user/base/{sha}", sha, bare=True)
    return Tree(spec=str(p), ident=ident, repo=repo, base=sha, base_label=base, user_path=p)


def _sync_shallow(repo: Path, user: Path) -> None:
    """A shallow user clone's history ends at its `shallow` commits; the mirror borrowing its objects must know."""
    src = _objects_dir(user).parent / "shallow"
    if src.is_file():
        shutil.copyfile(src, repo / "shallow")
    else:
        (repo / "shallow").unlink(missing_ok=True)


def _mirror_broken(repo: Path) -> str:
    """Why a user tree's mirror cannot be used any more ('' when it can): it borrows the user's objects, so a
    rebase + gc in the user's tree can remove commits its refs or its scratch worktree's HEAD still point to."""
    refs = git(repo, "for-each-ref", "--format=%(objectname)", bare=True, check=False)
    if refs.returncode:
        return "its refs are unreadable"
    tips = sorted(set(refs.stdout.split()))
    if tips:
        chk = proc.run(["git", "--git-dir", str(repo), "cat-file", "--batch-check"], input="\n".join(tips) + "\n",
                       check=False, what="git cat-file")
        gone = [ln.split()[0] for ln in chk.stdout.splitlines() if ln.endswith(" missing")]
        if chk.returncode or gone:
            return f"commit {gone[0][:12] if gone else '?'} is gone"
    wl = git(repo, "worktree", "list", "--porcelain", bare=True, check=False).stdout
    for head in (ln.split()[1] for ln in wl.splitlines() if ln.startswith("HEAD ")):
        # the scratch HEAD is base + a few patch commits: its recent history must still be readable
        if git(repo, "rev-list", "--first-parent", "--max-count=200", head, bare=True, check=False).returncode:
            return f"the history of the scratch checkout's HEAD {head[:12]} is gone"
    return ""


def _objects_dir(p: Path) -> Path:
    common = proc.run(["git", "-C", str(p), "rev-parse", "--git-common-dir"], env=READONLY_ENV).stdout.strip()
    d = Path(common)
    if not d.is_absolute():
        d = p / d
    return (d / "objects").resolve()


def open_tree(spec: str | None, base: str | None = None, log: Path | None = None) -> Tree:
    spec = spec or DEFAULT_TREE
    if spec.startswith("debian:"):
        t = fetch_debian(spec.split(":", 1)[1], log)
        if base and base not in ("HEAD", t.base_label):
            sha = git(t.repo, "rev-parse", "--verify", f"{base}^{{commit}}", bare=True, check=False)
            if sha.returncode:
                raise UsageError(f"--base {base} is not a commit of {spec}", fix="leave --base out for Debian trees")
            return replace(t, base=sha.stdout.strip(), base_label=base)
        return t
    return open_user_tree(spec, base or "HEAD")


def kernel_version(src: Path) -> tuple[int, int]:
    """VERSION.PATCHLEVEL from a tree's top Makefile."""
    text = (src / "Makefile").read_text(errors="replace")[:2000]
    v = re.search(r"^VERSION\s*=\s*(\d+)", text, re.M)
    p = re.search(r"^PATCHLEVEL\s*=\s*(\d+)", text, re.M)
    return (int(v.group(1)), int(p.group(1))) if v and p else (0, 0)
