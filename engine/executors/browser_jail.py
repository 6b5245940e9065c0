"""How Chromium is started: as root, only inside a jail; otherwise with its own sandbox.

A worker running as root starts Chromium in a jail: uid/gid 65534 (nobody) as seen from the host,
in pid, IPC, UTS and mount namespaces of its own, seeing a read-only /usr, the few /etc files it
reads (fonts, ld.so.cache, DNS, TLS roots), its own /proc (no worker to read the environment of),
a private /tmp for its home, a minimal /dev, and the profile directory Playwright made — nothing
else of the host (no /root, /work, /home, /var, other tenants' files). It keeps the host's network
namespace: it must reach the egress proxy on 127.0.0.1. Its environment is rebuilt from nothing,
so the worker's secrets and database URL are not in it.

Playwright starts "Chromium" itself (with its own arguments: the profile directory it made,
`--remote-debugging-pipe` on fds 3 and 4), so the jail is a small script, written where only root
can read it and removed once Chromium runs, given to Playwright as the executable. It hands the
profile directory to 65534, drops to that uid with no capabilities and no_new_privs (setpriv),
and execs bubblewrap, which, being unprivileged, makes a user namespace first: nothing inside is
root outside. setpriv and bwrap pass inherited fds through, so the pipe reaches Chromium.

Chromium keeps its own sandbox inside the jail: a kernel that lets 65534 make a user namespace
(Debian's does) lets it make the nested user, pid and network namespaces its zygote puts each
renderer in, seccomp-bpf on top. Only `STEPLINE_BROWSER_SANDBOX=false` turns it off, and then
only inside the jail. Where the kernel denies unprivileged user namespaces, bwrap cannot start
and neither does the browser (BROWSER_UNAVAILABLE, with bwrap's own message).

Without bubblewrap (or setpriv) a root worker refuses to start Chromium (`SANDBOX_UNAVAILABLE`):
a page that exploited it would own the host. A worker that is not root (the Dockerfile's
`stepline` user) starts Chromium directly, with Chromium's sandbox — the uid is already
unprivileged — and the same scrubbed environment.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.executors.sandbox import SANDBOX_UID, SandboxUnavailable, find_bwrap, is_root

JAIL_PATH = "/usr/bin:/bin"
JAIL_TMP = "/tmp"  # noqa: S108 (a tmpfs of the jail's own, not the host's /tmp)
KEPT_VARIABLES = ("LANG", "LANGUAGE", "LC_ALL", "TZ")
"""From the worker's environment, the variables a page may see the effect of (locale, time)."""
HOST_VARIABLES = ("HOME", "PATH", "TMPDIR")
"""And those a Chromium started outside the jail needs to find its files."""

READ_ONLY_ETC = (
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/chromium",
    "/etc/chromium.d",
    "/etc/fonts",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/pki",
    "/etc/resolv.conf",
    "/etc/ssl/certs",
    "/var/cache/fontconfig",
)
MERGED_USR = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
NAMESPACES = ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts")


@dataclass(frozen=True)
class ChromiumLaunch:
    """What Playwright's `chromium.launch` is given to start Chromium, jailed or not."""

    executable_path: str
    env: dict[str, str]
    chromium_sandbox: bool
    jailed: bool

    def options(self) -> dict[str, Any]:
        return {
            "executable_path": self.executable_path,
            "env": self.env,
            "chromium_sandbox": self.chromium_sandbox,
        }


def chromium_launch(
    chromium: str, sandbox: bool, jail_dir: Path, bwrap_path: str | None = None
) -> ChromiumLaunch:
    """How to start `chromium`: as root through a jail script written into `jail_dir`, with
    the bwrap at `bwrap_path` (default: on PATH)."""
    if not is_root():
        return ChromiumLaunch(chromium, _host_environment(), sandbox, jailed=False)
    script = jail_dir / "chromium-jail"
    script.write_text(jail_script(chromium, _jail_tools(bwrap_path)))
    script.chmod(0o700)
    return ChromiumLaunch(str(script), {"PATH": JAIL_PATH}, sandbox, jailed=True)


@dataclass(frozen=True)
class JailTools:
    bwrap: str
    setpriv: str
    chown: str


def _jail_tools(bwrap_path: str | None) -> JailTools:
    bwrap = find_bwrap(bwrap_path)
    found = {name: shutil.which(name) for name in ("setpriv", "chown")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise SandboxUnavailable(
            f"the worker runs as root, so Chromium starts only inside its jail, and "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on PATH "
            "(Debian's util-linux and coreutils); or run the worker as a non-root user"
        )
    return JailTools(bwrap, **{name: str(path) for name, path in found.items()})


def jail_script(chromium: str, tools: JailTools) -> str:
    """The shell script Playwright runs as Chromium; its arguments go to Chromium unchanged."""
    drop = [
        tools.setpriv,
        f"--reuid={SANDBOX_UID}",
        f"--regid={SANDBOX_UID}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]
    command = shlex.join([*drop, tools.bwrap, *bwrap_arguments(chromium)])
    return f"""#!/bin/sh
# Stepline's Chromium jail (engine/executors/browser_jail.py); Playwright runs it as Chromium.
set -eu
profile=
for argument do
    case "$argument" in --user-data-dir=*) profile="${{argument#--user-data-dir=}}" ;; esac
done
if [ -z "$profile" ] || [ ! -d "$profile" ]; then
    echo "chromium-jail: no --user-data-dir to give Chromium" >&2
    exit 2
fi
{shlex.quote(tools.chown)} --no-dereference {SANDBOX_UID}:{SANDBOX_UID} "$profile"
exec {command} --bind "$profile" "$profile" -- {shlex.quote(chromium)} "$@"
"""


def bwrap_arguments(chromium: str) -> list[str]:
    """bubblewrap's options for Chromium's jail, but for the profile directory (known later)."""
    return [
        *NAMESPACES,
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "chromium",
        "--ro-bind",
        "/usr",
        "/usr",
        *_merged_usr_links(),
        *_program_directory(chromium),
        *[option for path in READ_ONLY_ETC for option in ("--ro-bind-try", path, path)],
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        JAIL_TMP,
        "--chdir",
        JAIL_TMP,
        "--clearenv",
        *[
            option
            for name, value in _jail_environment().items()
            for option in ("--setenv", name, value)
        ],
    ]


def _merged_usr_links() -> list[str]:
    """/bin, /lib... as the host has them: links into /usr, or read-only directories."""
    options: list[str] = []
    for path in MERGED_USR:
        if os.path.islink(path):
            options += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            options += ["--ro-bind", path, path]
    return options


def _program_directory(chromium: str) -> list[str]:
    """A Chromium installed outside /usr (e.g. /opt/google/chrome) is bound read-only too."""
    installed = Path(chromium).resolve().parent
    if installed.is_relative_to("/usr"):
        return []
    return ["--ro-bind", str(installed), str(installed)]


def _jail_environment() -> dict[str, str]:
    kept = {name: os.environ[name] for name in KEPT_VARIABLES if name in os.environ}
    return {"HOME": JAIL_TMP, "PATH": JAIL_PATH, **kept}


def _host_environment() -> dict[str, str]:
    names = (*HOST_VARIABLES, *KEPT_VARIABLES)
    return {name: os.environ[name] for name in names if name in os.environ}
