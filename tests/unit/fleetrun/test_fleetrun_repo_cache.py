"""ensure_checkout: one clone per repository, one checkout per commit, with
real git on repositories made in tmp_path."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from testfleet.repo_cache import DONE_SUFFIX, CheckoutError, ensure_checkout

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

# The tests' own git runs ignore the user's and the system's configuration
# (commit signing, hooks, default branch names).
GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def commit_file(origin: Path, text: str) -> str:
    """Writes hello.txt, commits it, and returns the commit's full hash."""
    (origin / "hello.txt").write_text(text)
    git(origin, "add", "hello.txt")
    git(origin, "commit", "--quiet", "-m", f"hello {text}")
    return git(origin, "rev-parse", "HEAD")


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    repo = tmp_path / "origin"
    repo.mkdir()
    git(repo, "init", "--quiet")
    git(repo, "config", "user.name", "Test Fleet")
    git(repo, "config", "user.email", "fleet@example.invalid")
    return repo


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_a_checkout_by_path_holds_the_commits_files(origin: Path, cache: Path) -> None:
    first = commit_file(origin, "one")
    commit_file(origin, "two")
    tree = ensure_checkout(str(origin), first, cache)
    assert (tree / "hello.txt").read_text() == "one"
    assert git(tree, "rev-parse", "HEAD") == first
    # The completion marker is beside the tree, not in it.
    assert git(tree, "status", "--porcelain") == ""
    assert tree.with_name(first + DONE_SUFFIX).is_file()


def test_a_checkout_by_file_url(origin: Path, cache: Path) -> None:
    sha = commit_file(origin, "one")
    tree = ensure_checkout(origin.as_uri(), sha, cache)
    assert (tree / "hello.txt").read_text() == "one"


def test_an_abbreviated_commit_is_resolved(origin: Path, cache: Path) -> None:
    sha = commit_file(origin, "one")
    tree = ensure_checkout(str(origin), sha[:8].upper(), cache)
    assert tree.name == sha
    assert ensure_checkout(str(origin), sha, cache) == tree


def test_a_second_call_at_the_same_commit_reuses_the_checkout(origin: Path, cache: Path) -> None:
    sha = commit_file(origin, "one")
    tree = ensure_checkout(str(origin), sha, cache)
    shutil.rmtree(origin)
    # Nothing is fetched (the origin is gone), by full or abbreviated hash.
    assert ensure_checkout(str(origin), sha, cache) == tree
    assert ensure_checkout(str(origin), sha[:10], cache) == tree
    assert (tree / "hello.txt").read_text() == "one"


def test_a_commit_made_after_the_clone_is_fetched(origin: Path, cache: Path) -> None:
    first = commit_file(origin, "one")
    old = ensure_checkout(origin.as_uri(), first, cache)
    second = commit_file(origin, "two")
    new = ensure_checkout(origin.as_uri(), second, cache)
    assert new != old
    assert (new / "hello.txt").read_text() == "two"
    assert (old / "hello.txt").read_text() == "one"
    # One clone for the repository: both checkouts sit under it.
    assert new.parent == old.parent
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1


def test_a_commit_only_a_deleted_branch_reached_is_fetched_by_hash(
    origin: Path, cache: Path
) -> None:
    base = commit_file(origin, "one")
    ensure_checkout(str(origin), base, cache)
    git(origin, "checkout", "--quiet", "-b", "topic")
    topic = commit_file(origin, "topic")
    git(origin, "checkout", "--quiet", "-")
    git(origin, "branch", "--quiet", "-D", "topic")
    # No branch or tag reaches it: fetching them does not bring it...
    with pytest.raises(CheckoutError, match="not found"):
        ensure_checkout(str(origin), topic[:10], cache)
    # ...asking for it by its full hash does. Protocol v2 serves it anyway;
    # older gits speaking v0 only when the server allows it, as GitHub does.
    git(origin, "config", "uploadpack.allowAnySHA1InWant", "true")
    tree = ensure_checkout(str(origin), topic, cache)
    assert (tree / "hello.txt").read_text() == "topic"


def test_a_missing_commit_is_an_error_naming_it(origin: Path, cache: Path) -> None:
    sha = commit_file(origin, "one")
    ensure_checkout(str(origin), sha, cache)
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(CheckoutError, match=f"commit {missing} not found in {origin}"):
        ensure_checkout(str(origin), missing, cache)
    # Also on the first call, straight after the clone.
    other_cache = cache.with_name("other-cache")
    with pytest.raises(CheckoutError, match="commit abc1234 not found"):
        ensure_checkout(str(origin), "abc1234", other_cache)
    assert not list(other_cache.glob("*/checkouts/*"))


@pytest.mark.parametrize("as_url", [False, True])
def test_an_unreachable_repository_is_an_error_with_gits_words(
    tmp_path: Path, cache: Path, as_url: bool
) -> None:
    gone = tmp_path / "no-such-repo"
    repo = gone.as_uri() if as_url else str(gone)
    with pytest.raises(CheckoutError) as raised:
        ensure_checkout(repo, "abc1234", cache)
    message = str(raised.value)
    assert message.startswith(f"git could not clone {repo}: ")
    assert "fatal:" in message or "does not exist" in message
    assert "without a password prompt" in message
    # Nothing half-made stays behind.
    assert not list(cache.glob("*/repo.git*"))


def test_a_half_made_checkout_is_made_again(origin: Path, cache: Path) -> None:
    sha = commit_file(origin, "one")
    tree = ensure_checkout(str(origin), sha, cache)
    # As a process killed mid-checkout leaves it: files missing, no marker.
    tree.with_name(sha + DONE_SUFFIX).unlink()
    (tree / "hello.txt").unlink()
    again = ensure_checkout(str(origin), sha, cache)
    assert again == tree
    assert (tree / "hello.txt").read_text() == "one"


def test_a_deleted_work_tree_is_made_again(origin: Path, cache: Path) -> None:
    sha = commit_file(origin, "one")
    tree = ensure_checkout(str(origin), sha, cache)
    shutil.rmtree(tree)
    assert ensure_checkout(str(origin), sha, cache) == tree
    assert (tree / "hello.txt").read_text() == "one"


def test_a_half_made_clone_is_made_again(origin: Path, cache: Path) -> None:
    sha = commit_file(origin, "one")
    ensure_checkout(str(origin), sha, cache)
    (base,) = [p for p in cache.iterdir() if p.is_dir()]
    shutil.rmtree(base)
    (base / "repo.git.partial").mkdir(parents=True)
    (base / "repo.git.partial" / "junk").write_text("left by a killed clone")
    tree = ensure_checkout(str(origin), sha, cache)
    assert (tree / "hello.txt").read_text() == "one"
    assert not (base / "repo.git.partial").exists()


def test_concurrent_calls_make_one_checkout(origin: Path, cache: Path) -> None:
    sha = commit_file(origin, "one")
    start = threading.Barrier(8)
    results: list[Path | BaseException] = []

    def call() -> None:
        start.wait()
        try:
            results.append(ensure_checkout(origin.as_uri(), sha, cache))
        except BaseException as error:
            results.append(error)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert all(isinstance(result, Path) for result in results), results
    assert len(set(results)) == 1
    tree = results[0]
    assert isinstance(tree, Path)
    assert (tree / "hello.txt").read_text() == "one"
    (base,) = [p for p in cache.iterdir() if p.is_dir()]
    work_trees = git(base / "repo.git", "worktree", "list", "--porcelain")
    assert work_trees.count("worktree ") == 2  # the clone itself and one checkout


def test_waiting_for_another_callers_lock_ends_at_the_deadline(origin: Path, cache: Path) -> None:
    sha = commit_file(origin, "one")
    cache.mkdir()
    key = hashlib.sha256(str(origin.resolve()).encode()).hexdigest()[:16]
    with (cache / f"{key}.lock").open("a") as held:
        # As another worker process cloning the repository holds it.
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(CheckoutError, match="to wait for another clone or checkout of"):
            ensure_checkout(str(origin), sha, cache, timeout_seconds=0.1)
    assert (ensure_checkout(str(origin), sha, cache) / "hello.txt").read_text() == "one"


def fake_git(tmp_path: Path, script: str) -> str:
    path = tmp_path / "fake-git"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


def test_git_never_prompts(tmp_path: Path, cache: Path) -> None:
    seen = tmp_path / "env.txt"
    git_path = fake_git(
        tmp_path,
        f'env > "{seen}"\n[ -t 0 ] && echo tty >> "{seen}"\necho "fatal: denied" >&2\nexit 128\n',
    )
    with pytest.raises(CheckoutError, match="fatal: denied"):
        ensure_checkout("https://example.invalid/x.git", "abc1234", cache, git=git_path)
    env = seen.read_text().splitlines()
    assert "GIT_TERMINAL_PROMPT=0" in env
    assert "GIT_ASKPASS=" in env
    assert "SSH_ASKPASS=" in env
    assert "tty" not in env


def test_credentials_in_the_address_are_not_shown(tmp_path: Path, cache: Path) -> None:
    git_path = fake_git(tmp_path, 'echo "fatal: unable to access" >&2\nexit 128\n')
    with pytest.raises(CheckoutError) as raised:
        ensure_checkout("https://me:s3cret@example.invalid/x.git", "abc1234", cache, git=git_path)
    assert "s3cret" not in str(raised.value)
    assert "https://***@example.invalid/x.git" in str(raised.value)


def test_a_git_that_hangs_is_killed_at_the_deadline(tmp_path: Path, cache: Path) -> None:
    # The child's child holds the pipes too: the whole group has to go.
    git_path = fake_git(tmp_path, "sleep 60 &\nwait\n")
    with pytest.raises(CheckoutError, match=r"longer than 0.2 s to clone"):
        ensure_checkout(
            "https://example.invalid/x.git", "abc1234", cache, git=git_path, timeout_seconds=0.2
        )


def test_a_missing_git_is_an_error_saying_so(cache: Path) -> None:
    with pytest.raises(CheckoutError, match="could not run git"):
        ensure_checkout("/x", "abc1234", cache, git="/no/such/git")


@pytest.mark.parametrize("commit", ["", "--upload-pack=x", "a b"])
def test_a_commit_that_is_not_one_is_refused(cache: Path, commit: str) -> None:
    with pytest.raises(CheckoutError, match="is not a commit"):
        ensure_checkout("/x", commit, cache)
