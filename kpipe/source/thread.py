"""--thread MBOX|MSGID|URL: a patch series taken from its mailing-list thread by Debian's b4 (0.12).

A local thread (an mbox holding the cover letter, every revision's patches and the replies) goes through
``b4 --offline-mode am -m FILE``: b4 picks the newest revision (or ``-v N``), adds the trailers the replies gave
(Reviewed-by:, Acked-by:, Tested-by: from the reply's own sender) and writes the patches as an mbox and the
cover letter beside it. b4 runs in a private temp folder (never the user's cwd, never inside a git tree) with a
private HOME and XDG folders and git config (only user.name/user.email, which b4 0.12 needs even when it signs
nothing): the user's ~/.gitconfig, b4 settings and b4 cache do not change the result.

A message-id or a lore URL needs lore.kernel.org: it is probed first (a TCP connect, at most PROBE_TIMEOUT s)
and, when unreachable, refused at once with how to work offline (save the thread, pass --thread FILE); when
reachable ``b4 mbox`` fetches the thread (bounded by FETCH_TIMEOUT) into kpipe's cache and it is read as a local
thread. What b4 prints goes to stderr with exit 0 even when it found nothing ("No patches found.", "Unable to
find revision N"), so the result is judged by the files it wrote and those lines.

When the thread also holds an earlier revision than the one taken, b4 takes the newest of those too
(``b4 am -v N``, same folder and set-up) and kpipe/source/revisions.py compares the two: each patch unchanged, changed,
new or dropped, the authors' notes below '---' and the cover letter's changelog. A previous revision b4 finds no
patch of is no previous revision; one missing patches is compared all the same, saying so.
"""
from __future__ import annotations

import gzip
import os
import re
import shutil
import socket
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass, field
from email import message_from_string, policy
from email.message import EmailMessage, Message
from pathlib import Path

from .. import proc
from . import revisions
from ..errors import InfraError, UsageError

LORE = "lore.kernel.org"
LINKMASK = "https://lore.kernel.org/r/{}"      # b4 0.12's default linkmask
PROBE_TIMEOUT = 5.0
FETCH_TIMEOUT = 120.0
AM_TIMEOUT = 120.0
B4_FIX = "run `kpipe setup` (it installs Debian's b4), or `apt-get install b4`"
_VERSION = re.compile(r"^\s*\[[^\]]*?\bv(\d+)\b[^\]]*\]", re.I)   # "[PATCH v2 1/3]", "[RFC PATCH v3 0/2]"
_PREFIX = re.compile(r"^\s*(\[[^\]]*\]\s*)+")
_MISSING = re.compile(r"ERROR: missing \[(\d+/\d+)\]")      # a patch of the revision absent from the thread
# what b4 says beyond its patch list: warnings, notes and the lines under them (b4/mbox.py make_am)
_NOTE = re.compile(r"^\s*(WARNING|NOTE|ERROR|CRITICAL)\b|^\s+(!|Msg From:|[A-Z][\w-]+-by:)")


@dataclass(frozen=True)
class ThreadPatch:
    subject: str                # as b4 wrote it, prefix included ("[PATCH v2 1/2] mm: ...")
    message_id: str             # without <>
    revision: int
    body: str = field(default="", repr=False)   # the mail's body, decoded: commit message, notes, diff


@dataclass(frozen=True)
class ThreadAm:
    """What ``b4 am`` made of a thread: the chosen revision's patches, ready for ``git am``."""
    source: str                 # as given: the mbox path, a message-id or a URL
    mbox: Path                  # the thread b4 read (the user's file, or the one fetched into kpipe's cache)
    revision: int               # the revision b4 took
    title: str                  # the cover letter's subject without its [PATCH ...] prefix; "" without one
    message_id: str             # the cover letter's message-id, else the first patch's
    link: str                   # the thread on lore, when it was fetched from there; "" for a local file
    am_text: str                # b4's mbox: one mail per patch, trailers added
    patches: tuple[ThreadPatch, ...]
    notes: tuple[str, ...]      # b4's warnings and notes (trailers sent to the cover letter, ...)
    since_previous: revisions.RevisionChanges | None = None     # against the thread's previous revision, if any


def revision_of(subject: str) -> int:
    m = _VERSION.match(subject)
    return int(m.group(1)) if m else 1


def b4_env(home: Path) -> dict[str, str]:
    """The environment b4 runs in: a private HOME and XDG folders, no user or system git config, git's
    user.name/email set (b4 0.12 exits 1 with a KeyError when git has no user.email)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "B4_"))}
    for d in ("config", "cache", "data"):
        (home / d).mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_CACHE_HOME=str(home / "cache"),
               XDG_DATA_HOME=str(home / "data"), GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1",
               GIT_CEILING_DIRECTORIES=str(home.parent), GIT_CONFIG_COUNT="2",
               GIT_CONFIG_KEY_0="user.name", GIT_CONFIG_VALUE_0="kpipe",
               GIT_CONFIG_KEY_1="user.email", GIT_CONFIG_VALUE_1="kpipe@localhost", LC_ALL="C.UTF-8")
    return env


def _b4(args: list[str], tmp: Path, timeout: float) -> tuple[int, str]:
    """Run b4 in ``tmp`` with the private environment; its exit code and what it printed (stderr + stdout)."""
    if shutil.which("b4") is None:
        raise InfraError("b4 is not installed (needed for --thread)", fix=B4_FIX)
    cp = proc.run(["b4", *args], cwd=tmp, env=b4_env(tmp / "home"), replace_env=True, check=False,
                  timeout=timeout, what="b4")
    return cp.returncode, (cp.stderr or "") + (cp.stdout or "")


def _last(out: str, n: int = 8) -> list[str]:
    return [ln for ln in out.strip().splitlines() if ln.strip() and "OFFLINE mode" not in ln][-n:]


def _is_remote(spec: str) -> bool:
    return bool(re.match(r"^(https?://|id:|<)", spec) or ("@" in spec and "/" not in spec and not Path(spec).exists()))


def message_id_of(spec: str) -> str:
    """The message-id in a message-id or lore URL (as b4 reads it: the path segment holding an '@')."""
    if re.match(r"^https?://", spec):
        parts = [urllib.parse.unquote(p) for p in urllib.parse.urlparse(spec).path.split("/")]
        return next((p for p in parts if "@" in p), "")
    return spec.removeprefix("id:").strip().strip("<>")


def why_unreachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT) -> str:
    """Why no TCP connection to host:port (or to the https proxy b4 would use) opens within ``timeout`` s, name
    lookup included; '' when one does."""
    proxy = os.environ.get("https_proxy") or os.environ.get("HTTPS_PROXY")
    if proxy:
        u = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = u.hostname or host, u.port or 3128
    why: list[str] = ["no answer within %.0f s" % timeout]

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            why[0] = ""
        except OSError as e:
            why[0] = str(e) or type(e).__name__
    t = threading.Thread(target=probe, daemon=True)       # getaddrinfo has no timeout of its own
    t.start()
    t.join(timeout + 0.5)
    return why[0]


def _local_mbox(path: Path, tmp: Path) -> Path:
    """The thread file as b4 can read it: a .gz (lore's t.mbox.gz) unpacked into ``tmp``; checked to be an mbox."""
    if path.is_dir():
        raise UsageError(f"--thread {path} is a folder", fix="pass the thread as one mbox file")
    if not path.is_file():
        raise UsageError(f"--thread {path}: no such file",
                         fix="pass the thread as an mbox file, its message-id or its lore URL")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise UsageError(f"--thread {path}: a damaged gzip file ({e})", fix="download the thread again") from None
        path = tmp / "thread.mbox"
        path.write_bytes(data)
    if not re.search(rb"^From ", data, re.M):
        raise UsageError(f"--thread {path} is not an mbox (no 'From ' line starts a mail)",
                         fix="save the thread as an mbox (a mail client's 'save as mbox', `b4 mbox MSGID`, or "
                             "lore's t.mbox.gz), or pass a single patch with --patch FILE")
    return path


def _fetch(spec: str, tmp: Path) -> tuple[Path, str]:
    """A message-id or URL: the thread fetched from lore by ``b4 mbox`` into kpipe's cache; (mbox, link)."""
    from .. import cache
    msgid = message_id_of(spec)
    if not msgid or "@" not in msgid:
        raise UsageError(f"--thread {spec}: neither a file nor a message-id or lore URL",
                         fix="pass an mbox file, a message-id (<20240101.1-1-a@b.org>) or a lore URL")
    offline = f"save the thread as an mbox where there is network (`b4 mbox {msgid}`, or " \
              f"https://{LORE}/all/{msgid}/t.mbox.gz) and pass --thread FILE"
    why = why_unreachable(LORE)
    if why:
        raise InfraError(f"--thread {spec}: cannot reach {LORE} to fetch the thread ({why})", fix=offline)
    code, out = _b4(["mbox", "-o", str(tmp), "-n", "thread.mbox", spec], tmp, FETCH_TIMEOUT)
    got = tmp / "thread.mbox"
    if code or not got.is_file():
        raise InfraError(f"--thread {spec}: b4 could not fetch the thread from {LORE} (exit {code})",
                         detail=_last(out), fix=offline)
    name = re.sub(r"[^A-Za-z0-9._@+-]+", "_", msgid)[:120] + ".mbox"
    kept = cache.cache_dir("threads") / name
    shutil.copyfile(got, kept)
    return kept, LINKMASK.format(msgid)


def _revisions(mbox: Path) -> list[int]:
    """The revisions whose patches (or cover letters) a thread holds, from the subjects (for error messages)."""
    import mailbox
    revs: set[int] = set()
    for msg in mailbox.mbox(str(mbox)):
        subj = " ".join(str(msg.get("Subject", "")).split())
        if _PREFIX.match(subj):                 # "[PATCH v2 1/3] ...", not "Re: [PATCH ...]"
            revs.add(revision_of(subj))
    return sorted(revs)


def am(spec: str, revision: int | None = None) -> ThreadAm:
    """Take the series out of a thread with ``b4 am``: the newest revision, or ``revision``."""
    if revision is not None and revision < 1:
        raise UsageError(f"--thread-revision {revision}: revisions start at 1", fix="e.g. --thread-revision 2")
    with tempfile.TemporaryDirectory(prefix="kpipe-b4-") as t:
        tmp = Path(t)
        link = ""
        if Path(spec).expanduser().exists() or not _is_remote(spec):
            mbox = _local_mbox(Path(spec).expanduser().resolve(), tmp)
            shown = Path(spec).expanduser().resolve()
        else:
            mbox, link = _fetch(spec, tmp)
            shown = mbox
        code, out, am_file, cover = _run_am(mbox, tmp, revision, "series")
        if "Unable to find revision" in out:
            have = ", ".join(f"v{r}" for r in _revisions(mbox)) or "none"
            raise UsageError(f"--thread-revision {revision}: {spec} holds no revision {revision} (it holds: {have})",
                             fix="pick one of those, or leave --thread-revision out for the newest")
        if "No patches found" in out or (code == 0 and not am_file.is_file()):
            raise UsageError(f"--thread {spec}: b4 found no patch in the thread",
                             detail=_last(out, 4),
                             fix="pass the thread of a patch series (mails whose subjects start with [PATCH ...] "
                                 "and hold a diff)")
        if code or not am_file.is_file():
            raise InfraError(f"b4 am failed with exit {code} on {mbox}", detail=_last(out),
                             fix=f"check the thread file; `b4 am -m {mbox}` by hand shows b4's own error")
        missing = _MISSING.findall(out)
        am_text = am_file.read_text(errors="replace")
        patches = _patches(am_text)
        if missing:
            raise UsageError(f"--thread {spec}: v{patches[0].revision if patches else '?'} is incomplete: patch(es) "
                             f"{', '.join(missing)} missing from the thread",
                             fix="save the whole thread (every patch of the series), or pick a complete revision "
                                 "with --thread-revision N")
        title, top, cover_body = "", patches[0].message_id if patches else "", ""
        if cover.is_file():
            cmsg = message_from_string(cover.read_text(errors="replace"), policy=policy.default)
            title = _PREFIX.sub("", " ".join(str(cmsg["Subject"] or "").split())).strip()
            top = str(cmsg["Message-Id"] or "").strip().strip("<>") or top
            cover_body = _body(cmsg)
        chosen = re.search(r"Will use the latest revision: v(\d+)", out)
        rev = int(chosen.group(1)) if chosen else revision or (patches[0].revision if patches else 1)
        notes = tuple(ln.strip() for ln in out.splitlines()        # b4's "Rerun with -t/-S" names b4's options
                      if _NOTE.match(ln) and "missing [" not in ln and "Rerun with" not in ln)
        return ThreadAm(source=spec, mbox=shown, revision=rev, title=title, message_id=top,
                        link=link, am_text=am_text, patches=patches, notes=notes,
                        since_previous=_since_previous(mbox, tmp, rev, patches, cover_body))


def _run_am(mbox: Path, tmp: Path, revision: int | None, name: str) -> tuple[int, str, Path, Path]:
    """``b4 am`` of ``revision`` (None: the newest) of the local thread ``mbox`` into ``tmp``/am: b4's exit code,
    what it printed, and the mbox and cover letter it writes (NAME.mbx, NAME.cover; either may be absent)."""
    out_dir = tmp / "am"
    out_dir.mkdir(exist_ok=True)
    args = ["--offline-mode", "am", "-m", str(mbox), "-o", str(out_dir), "-n", name]
    if revision is not None:
        args += ["-v", str(revision)]
    code, out = _b4(args, tmp, AM_TIMEOUT)
    return code, out, out_dir / f"{name}.mbx", out_dir / f"{name}.cover"


def _since_previous(mbox: Path, tmp: Path, rev: int, patches: tuple[ThreadPatch, ...], cover: str
                    ) -> revisions.RevisionChanges | None:
    """Revision ``rev`` (its ``patches`` and cover letter body) against the newest earlier revision of the
    thread, which b4 takes the same way; None when the thread holds no earlier revision with a patch."""
    earlier = [r for r in _revisions(mbox) if r < rev]
    if not earlier:
        return None
    prev = earlier[-1]
    code, out, am_file, _ = _run_am(mbox, tmp, prev, "previous")
    if "No patches found" in out or "Unable to find revision" in out or (code == 0 and not am_file.is_file()):
        return None
    if code or not am_file.is_file():
        return revisions.RevisionChanges(rev, prev, (), note=f"not compared: b4 am -v {prev} failed with exit {code}"
                                         + "".join(f"; {ln}" for ln in _last(out, 2)))
    missing = _MISSING.findall(out)
    note = f"v{prev} in the thread lacks patch(es) {', '.join(missing)}: a patch shown as new may be one of " \
           "them" if missing else ""
    old = _patches(am_file.read_text(errors="replace"))
    return revisions.compare([_bare(p) for p in old], [_bare(p) for p in patches], rev, prev, cover, note,
                             cwd=tmp, env=b4_env(tmp / "home"))


def _bare(p: ThreadPatch) -> revisions.RevisionPatch:
    return revisions.RevisionPatch(_PREFIX.sub("", p.subject).strip(), p.body)


def _body(msg: Message) -> str:
    """A mail's body as text (quoted-printable or base64 decoded); as written when it is no single text part."""
    try:
        if isinstance(msg, EmailMessage) and not msg.is_multipart():
            return str(msg.get_content())
    except (KeyError, LookupError, ValueError):
        pass
    return msg.as_string().partition("\n\n")[2]


def _patches(am_text: str) -> tuple[ThreadPatch, ...]:
    """Each mail of b4's mbox (its separator: "From git@z ...") with its message-id and revision."""
    out_patches: list[ThreadPatch] = []
    for mail in re.split(r"(?m)^From git@z .*\n", am_text):
        if not mail.strip():
            continue
        msg = message_from_string(mail, policy=policy.default)
        subj = " ".join(str(msg["Subject"] or "").split())
        out_patches.append(ThreadPatch(subject=subj, message_id=str(msg["Message-Id"] or "").strip().strip("<>"),
                                       revision=revision_of(subj), body=_body(msg)))
    return tuple(out_patches)
