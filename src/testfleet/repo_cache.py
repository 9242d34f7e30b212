"""A cache of git checkouts: one clone per repository, one work tree per commit.

The worker's ``test`` executor calls :func:`ensure_checkout` for a task whose
project is ``repo`` + ``commit`` (:class:`~testfleet.domain.pytest_tasks.ProjectSource`),
and runs pytest in the directory it returns; the ``testfleet run`` client may
call it too, to collect at the same commit. The first task of a repository
clones it; every later task at the same commit gets the same directory back
at once, without running git at all.

Layout under ``cache_root``, per repository (``<key>`` is the first 16 hex
digits of the SHA-256 of the repository's address)::

    <key>.lock                  flock'ed while the repository's clone or
                                checkouts change
    <key>/repo.git/             a bare clone (branches and tags)
    <key>/checkouts/<sha>/      the work tree at full commit <sha> (a linked
                                work tree: ``git worktree add --detach``)
    <key>/checkouts/<sha>.done  written last: the checkout is complete
    <key>/origin.txt            the repository's address, for people

Decisions:

* A checkout counts only once its ``.done`` marker exists, and the marker is
  written after git finished, so a checkout left half-made by a killed
  process is removed and made again. The marker lives beside the work tree,
  not in it, so the tests see a clean tree. The clone is made in a temporary
  directory and renamed into place, so ``repo.git`` exists only complete.
* Linked work trees share the clone's objects (no copy per commit), and git
  knows about them, so ``git gc`` in the clone never drops a commit that a
  checkout still uses.
* Several threads or worker processes on one machine may ask at once: a
  per-repository ``fcntl.flock`` serialises every change, and the fast path
  (marker present) needs no lock. flock locks belong to the open file, so
  two threads of one process exclude each other too, and the kernel releases
  the lock of a killed process.
* A commit missing from the clone triggers one fetch (all branches and tags,
  then the commit itself by its full hash, for a commit only a pull request
  or a deleted branch still reaches; a clone made by this call skips the
  first part); still missing is an error that names the commit. Branch
  names are refused upstream of here (a run must be reproducible), but any
  name ``git rev-parse`` resolves would work.
* git never prompts: no terminal (a new session, stdin from /dev/null),
  ``GIT_TERMINAL_PROMPT=0`` and no askpass program. One deadline,
  ``timeout_seconds`` away, covers the whole call: waiting for the lock, and
  every git command, which is killed with the processes it started when the
  deadline passes.
* Nothing is ever evicted: old commits' work trees stay until someone
  deletes ``cache_root`` (or a repository's directory and lock file).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from testfleet.domain.credential_env import without_credentials

#: How much of git's stderr an error message quotes (its end: the cause).
STDERR_TAIL_CHARS = 2000
DONE_SUFFIX = ".done"
#: How often a call waiting for another's lock on the repository looks again.
LOCK_POLL_SECONDS = 0.05
_FULL_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
#: user:password@ in a URL, hidden in messages.
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


class CheckoutError(Exception):
    """The checkout could not be made; the message says what failed and what
    to do about it, and is shown to users as it is."""


def ensure_checkout(
    repo: str,
    commit: str,
    cache_root: Path,
    *,
    git: str = "git",
    timeout_seconds: float = 600.0,
) -> Path:
    """The work tree of ``repo`` at ``commit``, made on first use and reused after.

    ``repo`` is anything ``git clone`` accepts (a URL, ``host:path``, or a
    local path); ``commit`` a full or abbreviated commit hash. Raises
    :class:`CheckoutError` when git is missing, the repository cannot be
    reached, the commit does not exist, or ``timeout_seconds`` pass.
    """
    deadline = time.monotonic() + timeout_seconds
    repo = _normalise(repo)
    commit = commit.strip().lower()
    if not commit or commit.startswith("-") or any(char.isspace() for char in commit):
        raise CheckoutError(f"{commit!r} is not a commit: give the commit's hash")
    base = cache_root / hashlib.sha256(repo.encode()).hexdigest()[:16]
    checkouts = base / "checkouts"
    ready = _completed(checkouts, commit)
    if ready is not None:
        return ready
    runner = _Git(git, repo, deadline, timeout_seconds)
    cache_root.mkdir(parents=True, exist_ok=True)
    with _locked(cache_root / f"{base.name}.lock", runner):
        # Another thread or process may have finished it while we waited.
        ready = _completed(checkouts, commit)
        if ready is not None:
            return ready
        clone = base / "repo.git"
        fresh = not clone.exists()
        if fresh:
            _clone(runner, base, clone)
        sha = _resolve(runner, clone, commit)
        if sha is None:
            # A clone made just now has every branch and tag already.
            _fetch(runner, clone, commit, refs=not fresh)
            sha = _resolve(runner, clone, commit)
        if sha is None:
            raise CheckoutError(
                f"commit {commit} not found in {runner.shown}, even after fetching its "
                "branches and tags: check that the commit was pushed to that repository "
                "(and that an abbreviated hash is long enough to be unique)"
            )
        ready = _completed(checkouts, sha)
        if ready is not None:
            return ready
        return _checkout(runner, clone, checkouts, sha)


def _normalise(repo: str) -> str:
    """One key per repository: an existing local path counts as its absolute form."""
    repo = repo.strip()
    if "://" not in repo:
        path = Path(repo).expanduser()
        if path.exists():
            return str(path.resolve())
    return repo


def _completed(checkouts: Path, commit: str) -> Path | None:
    """The finished checkout for a full or abbreviated hash, or None.

    An abbreviation matching exactly one finished checkout is taken to mean
    it (no git needed, even with the repository unreachable); one matching
    several, or none, is left to git to resolve.
    """
    if not _HEX.match(commit):
        return None
    if _FULL_SHA.match(commit):
        candidates = [checkouts / f"{commit}{DONE_SUFFIX}"]
    else:
        candidates = list(checkouts.glob(f"{commit}*{DONE_SUFFIX}"))
    if len(candidates) != 1 or not candidates[0].is_file():
        return None
    tree = candidates[0].with_suffix("")
    return tree if tree.is_dir() else None


@contextmanager
def _locked(path: Path, runner: _Git) -> Iterator[None]:
    """The repository's lock, waited for until the call's deadline at most.

    Polled rather than blocking: a blocking flock cannot time out, and the
    holder may be another process's clone of a large repository.
    """
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= runner.deadline:
                    raise runner.timed_out("wait for another clone or checkout of") from None
                time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _clone(runner: _Git, base: Path, clone: Path) -> None:
    """A bare clone, made aside and renamed into place once complete."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "origin.txt").write_text(runner.shown + "\n")
    partial = base / "repo.git.partial"
    # Left over from a process killed while cloning.
    shutil.rmtree(partial, ignore_errors=True)
    runner.run(
        ["clone", "--bare", "--quiet", "--", runner.repo, str(partial)],
        doing="clone",
        advice="check the address, and that this machine can reach the repository "
        "without a password prompt (an SSH key or a credential helper)",
    )
    # A bare clone fetches nothing on `git fetch` until told what to: keep
    # branches and tags up to date (pruning deleted ones).
    for refspec in ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"):
        runner.run(
            ["config", "--add", "remote.origin.fetch", refspec],
            cwd=partial,
            doing="configure the clone of",
        )
    partial.rename(clone)


def _resolve(runner: _Git, clone: Path, commit: str) -> str | None:
    """The full hash of ``commit`` in the clone, or None when it is not there."""
    done = runner.run(
        ["rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
        cwd=clone,
        doing="look up a commit in",
        check=False,
    )
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and _FULL_SHA.match(sha) else None


def _fetch(runner: _Git, clone: Path, commit: str, *, refs: bool) -> None:
    """Bring the clone's branches and tags up to date (``refs``); then ask for
    ``commit`` itself when it is a full hash (servers may serve a commit no
    branch reaches)."""
    if refs:
        runner.run(
            ["fetch", "--quiet", "--prune", "--tags", "origin"],
            cwd=clone,
            doing="fetch",
            advice=f"commit {commit} is not in the cached clone, and fetching failed: check "
            "that this machine can still reach the repository without a password prompt",
        )
    if _FULL_SHA.match(commit):
        # Allowed to fail: many servers refuse to serve unadvertised commits.
        runner.run(
            ["fetch", "--quiet", "origin", commit],
            cwd=clone,
            doing="fetch a commit from",
            check=False,
        )


def _checkout(runner: _Git, clone: Path, checkouts: Path, sha: str) -> Path:
    """The work tree at ``sha``, made from scratch (any half-made one removed)."""
    tree = checkouts / sha
    marker = checkouts / f"{sha}{DONE_SUFFIX}"
    checkouts.mkdir(parents=True, exist_ok=True)
    # A marker whose work tree was deleted: unmark first, so no caller on
    # the fast path takes the tree while it is being made again.
    marker.unlink(missing_ok=True)
    if tree.exists():
        shutil.rmtree(tree)
    # Forget work trees whose directory is gone (a half-made one just removed).
    runner.run(["worktree", "prune"], cwd=clone, doing="tidy the clone of", check=False)
    runner.run(
        ["worktree", "add", "--detach", "--force", "--quiet", str(tree), sha],
        cwd=clone,
        doing=f"check out {sha[:12]} from",
        advice=f"check that {checkouts} is writable and its disk has room",
    )
    marker.write_text(f"{sha}\n")
    return tree


class _Git:
    """Runs git for one :func:`ensure_checkout` call: never prompting, within
    the call's deadline, and turning failures into :class:`CheckoutError`."""

    def __init__(self, git: str, repo: str, deadline: float, timeout_seconds: float) -> None:
        self.git = git
        self.repo = repo
        self.shown = _CREDENTIALS.sub("***@", repo)
        self.deadline = deadline
        self.timeout_seconds = timeout_seconds
        # git runs for a task's repository: it never gets testfleet's credentials.
        self.env = without_credentials(os.environ)
        self.env.update(
            GIT_TERMINAL_PROMPT="0",
            # Empty, not unset: git would fall back on core.askPass and
            # SSH_ASKPASS; an empty value means "no askpass program".
            GIT_ASKPASS="",
            SSH_ASKPASS="",
            # Git Credential Manager's own prompts.
            GCM_INTERACTIVE="never",
        )

    def run(
        self,
        args: list[str],
        *,
        doing: str,
        cwd: Path | None = None,
        advice: str = "",
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self.timed_out(doing)
        try:
            # A session of its own: no controlling terminal for ssh to prompt
            # on, and one group to kill with everything git started.
            process = subprocess.Popen(
                [self.git, *args],
                cwd=cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except OSError as error:
            raise CheckoutError(
                f"could not run git ({self.git}) to get {self.shown}: {error}; install git "
                "or point the worker at it"
            ) from error
        try:
            stdout, stderr = process.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.communicate()
            raise self.timed_out(doing) from None
        done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        if check and done.returncode != 0:
            tail = stderr.strip()[-STDERR_TAIL_CHARS:] or f"exit status {done.returncode}"
            message = f"git could not {doing} {self.shown}: {tail}"
            raise CheckoutError(f"{message}\n({advice})" if advice else message)
        return done

    def timed_out(self, doing: str) -> CheckoutError:
        return CheckoutError(
            f"git took longer than {self.timeout_seconds:g} s to {doing} {self.shown}: "
            "check the network and the repository's size, or allow more time"
        )


def _kill_group(process: subprocess.Popen[str]) -> None:
    # Gone already: git and its children ended on their own just in time.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
