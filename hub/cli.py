"""The `mlrp` command.

    mlrp up [--config FILE]             start the platform in the foreground
    mlrp doctor [--config FILE]         what this node has and lacks; exit 1 if a must-have
                                        is missing
    mlrp config check FILE              validate a deployment file, all its problems at once;
                                        exit 2 if it is not valid (warnings alone: exit 0)
    mlrp config example                 print the annotated example deployment file
    mlrp gpus [--config FILE]           who holds which GPU, since when, on which profile
    mlrp user add|import|passwd|logout|remove|list
                                        people: logins, groups, sessions, offboarding
    mlrp server clear NAME [--server S] force a person's stuck server out (hub running)
    mlrp images list|show|check|build   the curated images (hub/images_cli.py)

Exit status: 0 ok, 1 doctor found a missing must-have, 2 bad input (config, arguments).
Errors are sentences for the admin; no tracebacks.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from config.loading import load_config, load_with_inventory, resolve_path
from config.schema import ConfigError, MLRPConfig

SERVER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

if TYPE_CHECKING:
    from hub.people import Context
    from hub.storage import SQLRecords

EXIT_OK, EXIT_DOCTOR, EXIT_INPUT = 0, 1, 2
CONFIG_PY = Path(__file__).resolve().parent.parent / "config" / "jupyterhub_config.py"


class CLIError(Exception):
    """A message for the admin and exit status 2."""


def _load(args: argparse.Namespace) -> tuple[MLRPConfig, Path | None]:
    path = resolve_path(getattr(args, "config", None))
    return load_config(path), path


def _records(cfg: MLRPConfig) -> SQLRecords:
    from hub.storage import SQLRecords, sqlite_url

    cfg.hub.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(cfg.hub.data_dir, 0o700)
    return SQLRecords.from_url(os.environ.get("MLRP_DB_URL") or sqlite_url(cfg.hub.data_dir))


# -- mlrp up --------------------------------------------------------------------------------
def _wal(path: Path) -> None:
    """JupyterHub's SQLite in WAL mode (persists in the file): its commits during a burst of
    spawns stop blocking readers. Harmless to repeat; skipped for other databases."""
    import sqlite3

    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def cmd_up(args: argparse.Namespace) -> int:
    from hub import accounts
    from hub.tls import ensure_self_signed, fingerprint

    path = resolve_path(args.config)
    cfg, inventory = load_with_inventory(path)
    if cfg.accounts.mode != "single-user" and os.geteuid() != 0:
        raise CLIError(
            "mlrp up must run as root: it creates one Unix account per user and runs each "
            "server as that account. For one developer without root, set accounts.mode: "
            "single-user in the YAML (every server then runs as you)."
        )
    records = _records(cfg)
    # GPU leases and half-started servers a killed hub left are reconciled inside the hub once
    # it runs (hub/reconcile.py), against its own view of what runs.
    _wal(cfg.hub.data_dir / "jupyterhub.sqlite")
    lines = [
        "",
        "MLRP is starting.",
        f"  open:      {cfg.hub.public_url}",
        f"  config:    {path or 'embedded default (single node, local placement)'}",
        f"  data:      {cfg.hub.data_dir}",
        f"  GPUs:      {len(inventory.gpus)} ({inventory.source})",
    ]
    tls = cfg.hub.tls
    if tls is not None and tls.self_signed:
        cert, _ = ensure_self_signed(cfg.hub.data_dir, cfg.hub.ip)
        lines += [
            f"  TLS:       self-signed certificate {cert}",
            f"             SHA-256 {fingerprint(cert)}",
            "             (browsers warn until accepted; tell people this fingerprint)",
        ]
    if cfg.accounts.mode == "single-user":
        lines.append(
            "  DEVELOPER MODE (accounts.mode: single-user): every server runs as "
            f"uid {os.geteuid()}; there is no isolation between users."
        )
    for admin in cfg.login.admin_users:
        if not accounts.exists(records, admin):
            password = accounts.set_password(records, admin)
            lines += [
                f"  log in as: {admin}",
                f"  password:  {password}   (shown once; change it: mlrp user passwd {admin})",
            ]
        else:
            lines.append(f"  log in as: {admin} (password set earlier; reset: mlrp user passwd)")
    lines.append("  add users: mlrp user add NAME")
    print("\n".join(lines) + "\n", flush=True)

    env = dict(os.environ)
    env["MLRP_CONFIG"] = str(path) if path else ""
    env["PYTHONUNBUFFERED"] = "1"
    hub_bin = str(Path(sys.executable).parent / "jupyterhub")
    os.chdir(cfg.hub.data_dir)
    # Started in the background by a shell (`cmd &`, some service managers), we inherit SIGINT
    # ignored; the hub would pass that on to the idle culler it starts, which then sits out
    # JupyterHub's SIGINT and delays every hub shutdown by ~30 s. Ignored survives exec; default
    # does not need to.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execve(hub_bin, [hub_bin, "-f", str(CONFIG_PY)], env)


# -- mlrp config check / example ----------------------------------------------------------
def _warnings_text(warnings: list[str]) -> str:
    lines = "".join(f"\n  - {w}" for w in warnings)
    return f"warning: on this node, {len(warnings)} limit(s) cannot be given:{lines}"


def cmd_config_check(args: argparse.Namespace) -> int:
    from config.loading import examine

    path = Path(args.file)
    found = examine(path)
    if found.problems or found.config is None:
        print(f"mlrp: {ConfigError(str(path), found.problems)}", file=sys.stderr)
        if found.warnings:
            print(_warnings_text(found.warnings), file=sys.stderr)
        return EXIT_INPUT
    cfg = found.config
    print(
        f"{path}: valid. {len(cfg.profiles)} profile(s): "
        + ", ".join(p.slug for p in cfg.profiles)
        + f"; data in {cfg.hub.data_dir}; listening on {cfg.hub.public_url}"
    )
    if found.warnings:
        print(_warnings_text(found.warnings), file=sys.stderr)
    return EXIT_OK


def cmd_config_example(args: argparse.Namespace) -> int:
    from config.example import example_text

    print(example_text(), end="")
    return EXIT_OK


# -- mlrp doctor ----------------------------------------------------------------------------
def cmd_doctor(args: argparse.Namespace) -> int:
    from hub import doctor
    from hub.hub_state import probe_url

    path = resolve_path(args.config)
    if path:
        from config.schema import load

        cfg = load(path)  # doctor reports GPUs itself; no inventory check that would stop it
    else:
        from config.schema import parse

        # The embedded default's `gpus` section (auto, no devices); default_config() would
        # read NVML once more only to choose profiles, which the doctor does not judge.
        cfg = parse({"profiles": [{"slug": "cpu", "name": "CPU"}]})
    # The config's own gpus section, so the doctor judges GPUs and their fence with the
    # inventory the hub would build from it.
    h = cfg.hub
    return doctor.main(
        data_dir=h.data_dir,
        proxy_command=h.proxy_command,
        gpu_source=cfg.gpus.source,
        gpu_devices=list(cfg.gpus.devices),
        slurm=doctor.SlurmSetup.from_config(cfg),  # None: no Slurm profile, no slurm section
        multi_user=cfg.accounts.mode != "single-user",
        accounts=cfg.accounts.policy(),
        hub_url=probe_url(h.ip, h.port, h.scheme, h.hub_port),
        db_url=os.environ.get("MLRP_DB_URL") or None,
    )


# -- mlrp user ------------------------------------------------------------------------------
def _read_password(args: argparse.Namespace) -> str | None:
    if not getattr(args, "password_stdin", False):
        return None
    line = sys.stdin.readline().rstrip("\n")
    if not line:
        raise CLIError("--password-stdin was given but standard input was empty.")
    return line


def _people(args: argparse.Namespace) -> tuple[MLRPConfig, Context]:
    from hub import hub_client, people

    cfg, _ = _load(args)
    records = _records(cfg)
    try:
        hub = hub_client.connect(cfg.hub.data_dir, cfg.hub.hub_port, hub_client.api_host(cfg))
    except hub_client.HubError as e:
        raise CLIError(str(e)) from None
    return cfg, people.Context(cfg, records, hub)


def _passwords_table(made: dict[str, str], given: bool) -> str:
    if given:
        return ""
    if len(made) == 1:
        return f" Password: {next(iter(made.values()))}"
    width = max(len(n) for n in made)
    lines = [f"  {n:<{width}}  {pw}" for n, pw in made.items()]
    return "\nPasswords (shown once; give each person theirs):\n" + "\n".join(lines)


def cmd_user(args: argparse.Namespace) -> int:
    from hub import accounts, people

    try:
        return _USER_ACTIONS[args.action](args)
    except (accounts.AccountInputError, people.PeopleError, people.HubError) as e:
        raise CLIError(str(e)) from None


def _user_list(args: argparse.Namespace) -> int:
    from hub import accounts

    cfg, _ = _load(args)
    for name in accounts.names(_records(cfg)):
        print(name)
    return EXIT_OK


def _user_add(args: argparse.Namespace) -> int:
    from hub import people

    cfg, ctx = _people(args)
    groups = list(dict.fromkeys(args.group or []))
    if args.restore and len(args.names) != 1:
        raise CLIError("--restore gives one person back their earlier account: name only one.")
    given = _read_password(args)
    if given is not None and len(args.names) != 1:
        raise CLIError("--password-stdin sets one person's password: name only one.")
    persons = [people.Person(n, groups, None, given) for n in args.names]
    if args.restore:
        people.check_people(ctx, persons)
        unix, home = people.restore(ctx, args.names[0])
    made = people.add(ctx, persons, cfg.login.min_password_length)
    what = f" in group(s) {', '.join(groups)}" if groups else ""
    print(f"Created {', '.join(made)}{what}." + _passwords_table(made, given is not None))
    if args.restore:
        print(f"{args.names[0]} has their earlier Unix account {unix} back (files in {home}).")
    return EXIT_OK


def _user_import(args: argparse.Namespace) -> int:
    from hub import people

    cfg, ctx = _people(args)
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CLIError(f"Cannot read {args.file}: {getattr(e, 'strerror', None) or e}.") from None
    made = people.import_csv(ctx, text, args.file, cfg.login.min_password_length)
    print(f"Imported {len(made)} people from {args.file}." + _passwords_table(made, False))
    return EXIT_OK


def _user_passwd(args: argparse.Namespace) -> int:
    from hub import accounts, people

    cfg, ctx = _people(args)
    name = accounts.check_username(args.name)
    if not accounts.exists(ctx.records, name):
        raise CLIError(f"There is no login account {name!r}; use `mlrp user add {name}`.")
    given = _read_password(args)
    password = accounts.set_password(
        ctx.records, name, given, min_length=cfg.login.min_password_length
    )
    revoked = people.end_sessions(ctx, name)
    print(
        f"Changed the password of {name}; their other sessions ended and {revoked} token(s) "
        "were revoked." + ("" if given else f" Password: {password}")
    )
    return EXIT_OK


def _user_logout(args: argparse.Namespace) -> int:
    from hub import accounts, people

    _, ctx = _people(args)
    name = accounts.check_username(args.name)
    revoked = people.end_sessions(ctx, name)
    print(f"Ended every session of {name} and revoked {revoked} token(s).")
    return EXIT_OK


def _user_remove(args: argparse.Namespace) -> int:
    from hub import accounts, people

    cfg, ctx = _people(args)
    name = accounts.check_username(args.name)
    archive_dir = cfg.hub.data_dir / "archive" if args.archive else None
    done = people.remove(ctx, name, archive_dir)
    lines = [
        f"Removed {name}: servers stopped and GPUs freed, sessions and tokens revoked, login and "
        "group memberships deleted."
    ]
    if done.archive is not None:
        lines.append(f"Unix account {done.unix_account} archived to {done.archive} and deleted.")
    elif done.unix_account is not None and done.home is not None:
        lines.append(
            f"Unix account {done.unix_account} is locked; files kept in {done.home}. Someone "
            f"added later as {name} gets a new account (mlrp user add {name} --restore gives "
            "this one back)."
        )
    print("\n".join(lines))
    return EXIT_OK


_USER_ACTIONS = {
    "list": _user_list,
    "add": _user_add,
    "import": _user_import,
    "passwd": _user_passwd,
    "logout": _user_logout,
    "remove": _user_remove,
}


# -- mlrp server -----------------------------------------------------------------------------
def cmd_server_clear(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    from hub import accounts, hub_client

    cfg, _ = _load(args)
    try:
        name = accounts.check_username(args.name)
    except accounts.AccountInputError as e:
        raise CLIError(str(e)) from None
    server = args.server or ""
    if server and not SERVER_NAME_RE.fullmatch(server):
        raise CLIError(f"--server {server!r}: a server name is 1-64 of a-z, 0-9, '-', '_' or '.'.")
    try:
        hub = hub_client.connect(cfg.hub.data_dir, cfg.hub.hub_port, hub_client.api_host(cfg))
        if hub is None:
            raise CLIError(
                "The hub is not running. Start it (mlrp up): at start it cleans every server "
                "it no longer runs. If this one is still stuck then, run this again."
            )
        path = f"/mlrp/users/{quote(name, safe='')}/servers/{quote(server, safe='')}/clear"
        r = hub("POST", path)
        hub_client.check(r, f"clear the server of {name}", ok=(200,))
    except hub_client.HubError as e:
        raise CLIError(str(e)) from None
    steps = "; ".join(r.json().get("steps", []))
    label = f"{name}/{server}" if server else name
    print(f"Cleared the server of {label}: {steps}. Its GPUs are free again.")
    return EXIT_OK


# -- mlrp gpus ------------------------------------------------------------------------------
def cmd_gpus(args: argparse.Namespace) -> int:
    import json
    import socket

    from hub.gpu_usage import usage_within
    from hub.gpu_view import as_json, gpu_rows, render_text, server_profiles, utc_now

    cfg, inventory = load_with_inventory(resolve_path(args.config))
    leases = _records(cfg).leases(socket.gethostname())
    profiles = server_profiles(cfg.hub.data_dir / "jupyterhub.sqlite")
    usage = usage_within()  # never waits for a hung driver longer than a few seconds
    rows = gpu_rows(inventory.ids, leases, profiles, usage)
    if args.json:
        print(json.dumps(as_json(rows, usage, socket.gethostname()), indent=2))
    else:
        print(render_text(rows, utc_now(), usage), end="")
    return EXIT_OK


# -- argument parsing -----------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"mlrp: {message} (see mlrp --help)", file=sys.stderr)
        raise SystemExit(EXIT_INPUT)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mlrp", description="Machine Learning Research Platform")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    up = sub.add_parser("up", help="start the platform in the foreground")
    up.add_argument("--config", help="deployment YAML (default: $MLRP_CONFIG, /etc/mlrp/mlrp.yaml)")
    up.set_defaults(func=cmd_up)

    doc = sub.add_parser("doctor", help="check what this node has and lacks")
    doc.add_argument("--config")
    doc.set_defaults(func=cmd_doctor)

    gpus = sub.add_parser(
        "gpus", help="who holds which GPU, since when, on which profile, and how busy it is"
    )
    gpus.add_argument("--config")
    gpus.add_argument("--json", action="store_true", help="print JSON for scripts (times in UTC)")
    gpus.set_defaults(func=cmd_gpus)

    srv = sub.add_parser("server", help="people's servers")
    srv_sub = srv.add_subparsers(dest="server_command", required=True, parser_class=_Parser)
    clear = srv_sub.add_parser(
        "clear", help="force a stuck server out: cancel, stop or tear down, free its GPUs"
    )
    clear.add_argument("name", help="the person (hub name)")
    clear.add_argument("--server", default="", help="a named server (default: their default)")
    clear.add_argument("--config")
    clear.set_defaults(func=cmd_server_clear)

    cfg = sub.add_parser("config", help="work with deployment files")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    check = cfg_sub.add_parser("check", help="validate a deployment YAML")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)
    example = cfg_sub.add_parser("example", help="print the annotated example deployment YAML")
    example.set_defaults(func=cmd_config_example)

    user = sub.add_parser("user", help="people: logins, groups, sessions, offboarding")
    user_sub = user.add_subparsers(dest="action", required=True, parser_class=_Parser)
    add = user_sub.add_parser("add", help="create logins (prints generated passwords once)")
    add.add_argument("names", nargs="+", metavar="NAME")
    add.add_argument(
        "--group",
        action="append",
        metavar="GROUP",
        help="a group from the YAML's groups: section (repeat for several); needs the hub up",
    )
    add.add_argument(
        "--restore",
        action="store_true",
        help="give a removed person back their earlier Unix account and files",
    )
    imp = user_sub.add_parser("import", help="create logins from a CSV: name,groups,email")
    imp.add_argument("file")
    pw = user_sub.add_parser("passwd", help="set a new password; ends their other sessions")
    pw.add_argument("name")
    out = user_sub.add_parser("logout", help="end every session of a person, revoke tokens")
    out.add_argument("name")
    rm = user_sub.add_parser(
        "remove", help="offboard: end access, stop servers; keep (or archive) their files"
    )
    rm.add_argument("name")
    rm.add_argument(
        "--archive",
        action="store_true",
        help="pack the home into <data_dir>/archive and delete the Unix account",
    )
    ls = user_sub.add_parser("list", help="list logins")
    for a in (add, pw):
        a.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from standard input instead of generating one",
        )
    for a in (add, imp, pw, out, rm, ls):
        a.add_argument("--config")
    user.set_defaults(func=cmd_user)

    from hub.images_cli import add_parser as add_images_parser

    add_images_parser(sub, _Parser)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"mlrp: {e}", file=sys.stderr)
        return EXIT_INPUT
    except CLIError as e:
        print(f"mlrp: {e}", file=sys.stderr)
        return EXIT_INPUT
    except PermissionError as e:
        print(f"mlrp: permission denied: {e.filename}. Run as root.", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
