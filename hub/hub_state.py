"""What a hub on this node is doing, read from outside it: for `mlrp doctor`.

Only looks: the pid file JupyterHub writes (`JupyterHub.pid_file`, <data_dir>/jupyterhub.pid,
set in config/render.py), one request to the hub on loopback, and the lease table of the MLRP
database, read as `mlrp gpus` reads it (nothing is created or migrated).
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from config.schema import is_loopback
from hub import accounts
from hub.storage import SQLRecords
from spawners.records import Lease

PID_FILE = "jupyterhub.pid"
ANSWER_TIMEOUT = 2.0  # seconds; a hub that takes longer to answer its API is not healthy
WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True)
class HubProcess:
    pid: int | None  # the live jupyterhub named by the pid file; None when there is none
    detail: str  # what was found, for the admin
    stale: bool = False  # a pid file is there, but its process is gone or is something else


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return []  # there, but unreadable
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def is_jupyterhub(cmdline: list[str]) -> bool:
    """`jupyterhub ...` run through its script (`python .../bin/jupyterhub -f ...`, what `mlrp
    up` execs) or as a module (`python -m jupyterhub`)."""
    return any(Path(arg).name == "jupyterhub" for arg in cmdline[:3])


def hub_process(data_dir: Path) -> HubProcess:
    """The hub named by <data_dir>/jupyterhub.pid, if that process still is a jupyterhub."""
    pid_file = data_dir / PID_FILE
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return HubProcess(None, f"not running (no {pid_file})")
    except OSError as e:
        return HubProcess(None, f"cannot read {pid_file}: {e.strerror or e}", stale=True)
    try:
        pid = int(text)
    except ValueError:
        return HubProcess(None, f"{pid_file} holds {text[:20]!r}, not a process id", stale=True)
    cmdline = _cmdline(pid)
    if cmdline is None:
        return HubProcess(
            None, f"not running: {pid_file} names process {pid}, which has ended", stale=True
        )
    if cmdline and not is_jupyterhub(cmdline):
        shown = " ".join(cmdline)[:60]
        return HubProcess(
            None,
            f"not running: {pid_file} names process {pid}, which is now `{shown}`, not jupyterhub",
            stale=True,
        )
    return HubProcess(pid, f"running (pid {pid})")


def probe_url(ip: str, port: int, scheme: str, hub_port: int) -> str:
    """Where to ask whether the hub answers, on loopback only: its public address when that is
    loopback or every address, else the hub's own API port (always 127.0.0.1, config/render.py)."""
    host = WILDCARDS.get(ip, ip)
    if is_loopback(host):
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}/hub/api/"
    return f"http://127.0.0.1:{hub_port}/hub/api/"


def answers(url: str, timeout: float = ANSWER_TIMEOUT) -> tuple[bool, str]:
    """Whether the hub's API at `url` (loopback) answers; and if not, why, in a few words."""
    if not is_loopback(urllib.parse.urlsplit(url).hostname or ""):
        return False, f"{url} is not a loopback address; not asked"
    # Only "is something there" is asked and nothing is sent: a self-signed certificate, the
    # default under hub.tls.self_signed, must not make a live hub look dead.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as reply:  # noqa: S310
            return True, f"{url} answers (HTTP {reply.status})"
    except urllib.error.HTTPError as e:
        return False, f"{url} answers HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return False, f"{url} does not answer ({reason})"


def read_leases(db_url: str, node: str) -> tuple[list[Lease] | None, str]:
    """The GPU leases of `node` in the MLRP database at `db_url` (SQLRecords.leases, the same
    read `mlrp gpus` does, without the migration that opening it for the hub runs); None and
    why when they cannot be read."""
    if db_url.startswith("sqlite:///") and not Path(db_url.removeprefix("sqlite:///")).exists():
        return None, "no MLRP database yet (the hub has not run with this data_dir)"
    engine = create_engine(db_url)
    try:
        return SQLRecords(engine).leases(node), ""
    except SQLAlchemyError as e:
        return None, f"cannot read the leases: {str(e).splitlines()[0]}"
    finally:
        engine.dispose()


def read_people(db_url: str) -> tuple[list[str] | None, str]:
    """The names of everyone with a login in the MLRP database at `db_url`; None and why when
    they cannot be read."""
    if db_url.startswith("sqlite:///") and not Path(db_url.removeprefix("sqlite:///")).exists():
        return None, "no MLRP database yet (the hub has not run with this data_dir)"
    engine = create_engine(db_url)
    try:
        return accounts.names(SQLRecords(engine)), ""
    except SQLAlchemyError as e:
        return None, f"cannot read the logins: {str(e).splitlines()[0]}"
    finally:
        engine.dispose()
