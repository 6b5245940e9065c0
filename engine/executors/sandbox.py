"""The jail every shell command runs in: bubblewrap (`bwrap`), never the worker's own world.

A command sees a read-only `/usr` (with the merged-usr links `/bin`, `/lib`, `/lib64`,
`/sbin`), the few read-only `/etc` files programs need to start (the dynamic linker's cache,
the time zone, the Debian alternatives; no passwd, no hosts), its own `/proc` with its own pid
1 and no other process, a minimal `/dev`, a private size-capped tmpfs `/tmp`, and the session's
work directory read-write at its own path. Its environment is only what the executor passes.

It has its own pid, network, IPC, UTS, mount (and cgroup) namespaces, so it has NO network:
its only interface is a loopback of its own, where nothing of the host listens (egress for
shell commands is out of scope). It dies with the worker (`--die-with-parent`) and has no
terminal (`--new-session`).

Its uid is unprivileged as the host sees it:
- the worker is root: bwrap runs as root without a user namespace (so it can mount a work
  directory below a path uid 65534 may not traverse, such as /root/.local/share), and inside
  the jail `setpriv` drops to uid/gid 65534 with no groups, no capabilities and no_new_privs,
  then `unshare` gives the program a user namespace mapping 65534 to the host's 65534 alone.
  (bwrap run as 65534 would resolve the work directory as 65534, and fail below /root.)
- the worker is not root: bwrap runs as the worker's uid in a user namespace that shows it as
  65534 inside and forbids nested ones. The host sees the worker's own unprivileged uid.
Either way the process limit is set inside that user namespace (see `Jail._inside`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_LAUNCHER = """\
import os, sys
count = int(os.environ["STEPLINE_JAIL_OPTIONS"])
options = [os.environb[b"STEPLINE_JAIL_OPTION_%d" % n] for n in range(count)]
held = os.memfd_create("bwrap-options", 0)
data = b"".join(option + b"\\0" for option in options)
while data:
    data = data[os.write(held, data):]
os.lseek(held, 0, os.SEEK_SET)
bwrap = os.environb[b"STEPLINE_JAIL_BWRAP"]
command = [os.fsencode(part) for part in sys.argv[1:]]
os.execve(bwrap, [bwrap, b"--args", str(held).encode(), b"--", *command], {})
"""
"""Becomes bwrap, with the options it was given in its environment handed over through a
file descriptor (`--args`, which bwrap reads and closes), and an empty environment."""

SANDBOX_UID = 65534
"""`nobody`: owns nothing on the host but the work directories it is given."""

SANDBOX_PATH = "/usr/local/bin:/usr/bin"
"""The program search path inside the jail: only /usr is there."""

INSTALL_ADVICE = (
    "install bubblewrap (apt-get install bubblewrap, or `make bubblewrap`) "
    "or set STEPLINE_BWRAP_PATH to its bwrap program"
)

_READ_ONLY_ETC = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/alternatives",  # /usr/bin/awk and friends are links through here
)
_MERGED_USR_LINKS = (("usr/bin", "/bin"), ("usr/sbin", "/sbin"), ("usr/lib", "/lib"))


class SandboxUnavailable(Exception):
    """bubblewrap is missing or cannot build the jail here; nothing may run unsandboxed (a
    shell command), or start (Chromium, as root)."""


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def find_bwrap(configured: str | None) -> str:
    """The bwrap program: the configured one, else the one on PATH."""
    if configured:
        if os.access(configured, os.X_OK) and Path(configured).is_file():
            return configured
        raise SandboxUnavailable(f"{configured} is not an executable bwrap: {INSTALL_ADVICE}")
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not on PATH: {INSTALL_ADVICE}")
    return found


def program_exists(program: str) -> bool:
    """Whether the jail can find `program`: its /usr is the host's, read-only."""
    return shutil.which(program, path=SANDBOX_PATH) is not None


def own_work_directory(workdir: Path) -> None:
    """Give the work directory to the sandbox uid, so that commands can write in it."""
    if is_root():
        os.chown(workdir, SANDBOX_UID, SANDBOX_UID)
        workdir.chmod(0o700)


def program_started(status_fd: int) -> bool:
    """Whether bwrap's JSON status (read from the pipe it wrote to, once it has exited) says
    the jail was built and the program started: it writes the exit code only then."""
    os.set_blocking(status_fd, False)
    status = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(status_fd, 65_536):
            status += chunk
    for line in status.decode("utf-8", errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if "exit-code" in json.loads(line):
                return True
    return False


@dataclass(frozen=True)
class Jail:
    """The bubblewrap command line for one session's work directory."""

    bwrap: str
    workdir: Path
    """Resolved: it is mounted at this same path, so paths inside it mean the same there."""
    tmp_mb: int = 64
    processes: int = 64
    read_only: tuple[Path, ...] = ()
    """More to see, read-only, each at its own path (an MCP server's Python and its files)."""

    def argv(
        self, program_argv: Sequence[str], env: Mapping[str, str], status_fd: int | None
    ) -> list[str]:
        """What to run so that `program_argv` runs jailed with exactly `env`. bwrap writes
        `{"exit-code": N}` to `status_fd` only if the jail was built and the program started:
        see `started`. None: no status (the program keeps every descriptor it is given; bwrap
        closes its status descriptor in the jail)."""
        options, command = self.parts(program_argv, env, status_fd)
        return [self.bwrap, *options, "--", *command]

    def parts(
        self, program_argv: Sequence[str], env: Mapping[str, str], status_fd: int | None
    ) -> tuple[list[str], list[str]]:
        """`argv`'s two halves: bwrap's options (the environment among them) and the command
        it runs (`unlisted` keeps the options off every command line)."""
        status = [] if status_fd is None else ["--json-status-fd", str(status_fd)]
        options = [
            *status,
            *self._namespaces(),
            "--die-with-parent",
            "--new-session",
            *self._filesystem(),
            "--chdir",
            str(self.workdir),
            "--clearenv",
            *[arg for name, value in env.items() for arg in ("--setenv", name, value)],
        ]
        return options, [*self._inside(), *program_argv]

    def check(self) -> None:
        """Run `true` in the jail once: raises SandboxUnavailable saying why it cannot run.

        A failure of bwrap itself shows in its status on every run (`program_started`); this
        also catches what runs in the jail before the program (setpriv, unshare, prlimit),
        which a host without unprivileged user namespaces refuses."""
        status_read, status_write = os.pipe()
        try:
            finished = subprocess.run(  # noqa: S603 - our own bwrap command line
                self.argv(["true"], {"PATH": SANDBOX_PATH}, status_write),
                env={},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(status_write,),
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SandboxUnavailable(f"cannot run {self.bwrap}: {error}") from error
        finally:
            os.close(status_write)
        try:
            started = program_started(status_read)
        finally:
            os.close(status_read)
        if finished.returncode != 0 or not started:
            said = finished.stdout.decode("utf-8", errors="replace").strip()
            raise SandboxUnavailable(
                f"bubblewrap could not build the sandbox (exit {finished.returncode}"
                f"{': ' + said if said else ''}); no command runs without it"
            )

    @staticmethod
    def _namespaces() -> list[str]:
        if os.geteuid() == 0:
            # Every namespace but the user one: setpriv needs the host's uid 65534 to exist.
            return [
                "--unshare-pid",
                "--unshare-net",
                "--unshare-ipc",
                "--unshare-uts",
                "--unshare-cgroup-try",
                "--cap-add",
                "CAP_SETUID",
                "--cap-add",
                "CAP_SETGID",
            ]
        uid = str(SANDBOX_UID)
        return ["--unshare-all", "--unshare-user", "--disable-userns", "--uid", uid, "--gid", uid]

    def _inside(self) -> list[str]:
        """What runs in the jail before the program: the drop to the sandbox uid as root, and
        the process limit, set only once the program has a user namespace of its own. The
        kernel counts processes per uid in each user namespace, so the limit then counts the
        jail's processes alone, not every uid 65534 process on the host (Chromium's, other
        sessions'), and setting it before would let those make the program's exec fail."""
        limit = ["/usr/bin/prlimit", f"--nproc={self.processes}:{self.processes}", "--"]
        if os.geteuid() != 0:
            return limit  # bwrap made the user namespace
        uid = str(SANDBOX_UID)
        drop = [
            "/usr/bin/setpriv",
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ]
        own_namespace = ["/usr/bin/unshare", "--user", f"--map-user={uid}", f"--map-group={uid}"]
        return [*drop, *own_namespace, "--", *limit]

    def _filesystem(self) -> list[str]:
        workdir = str(self.workdir)
        mounts = ["--ro-bind", "/usr", "/usr"]
        for target, link in _MERGED_USR_LINKS:
            mounts += ["--symlink", target, link]
        if Path("/lib64").exists():
            mounts += ["--symlink", "usr/lib64", "/lib64"]
        for path in _READ_ONLY_ETC:
            mounts += ["--ro-bind-try", path, path]
        mounts += ["--proc", "/proc", "--dev", "/dev"]
        tmp_bytes = str(self.tmp_mb * 1024 * 1024)
        mounts += ["--perms", "1777", "--size", tmp_bytes, "--tmpfs", "/tmp"]  # noqa: S108 - the jail's own
        for readable in self.read_only:
            mounts += [*_parents(readable), "--ro-bind", str(readable), str(readable)]
        return [*mounts, *_parents(self.workdir), "--bind", workdir, workdir]


def _parents(path: Path) -> list[str]:
    """The directories above `path`, made traversable: bwrap would make them 0700, root's, and
    the program could not name what is mounted below them."""
    made: list[str] = []
    for parent in reversed(path.parents[:-1]):
        made += ["--perms", "0755", "--dir", str(parent)]
    return made


def unlisted(
    bwrap: str, options: Sequence[str], command: Sequence[str]
) -> tuple[list[str], dict[str, str]]:
    """A jail (`Jail.parts`) as a command whose command line shows its `command` alone, and
    the environment to start that command with.

    Any process of the host may read another's command line; only its own user may read its
    environment. So a launcher (this Python, isolated) is given bwrap's options, the jail's
    environment among them, in its own environment, hands them to bwrap through a file
    descriptor and becomes bwrap, with an empty environment, running `command`."""
    environment = {f"STEPLINE_JAIL_OPTION_{n}": option for n, option in enumerate(options)}
    environment["STEPLINE_JAIL_OPTIONS"] = str(len(options))
    environment["STEPLINE_JAIL_BWRAP"] = bwrap
    return [sys.executable, "-I", "-c", _LAUNCHER, *command], environment
