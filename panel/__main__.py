"""`python -m panel COMMAND`: the panel's command line.

  serve [--host H] [--port P] [--workers N]   run the panel under Waitress (upgrades the
                                schema first, like migrate)
  init-db                       create or upgrade the schema (idempotent)
  migrate [--check]             apply pending schema migrations (--check: only say if any)
  backup FILE                   SQLite: an online copy of the database; PostgreSQL: how to pg_dump
  prune                         drop samples and rollups past their retention now
  create-admin USERNAME [--role R] [--customer SLUG]   a user (staff, or a customer's
                                with --role customer-admin|customer-viewer); password from
                                MPANEL_ADMIN_PASSWORD, else prompted
  reset-two-factor USERNAME     turn a locked-out user's two-factor off (security log)
  create-token USERNAME NAME [--scope read|write] [--customer SLUG] [--expires-days N]
                                an API token of that user's for /api/v1, printed once
  tokens USERNAME / revoke-token TOKEN_ID   a user's tokens; revoke one at once
  customers add NAME [--slug S] | rename SLUG NAME | delete SLUG | list
  move-server SERVER (--customer SLUG | --staff)   whose server it is
  status-page CUSTOMER (--on | --off) [--title T]   the customer's public /status/<slug>

  add-server NAME [--critical]  create a server and print its API key, once
  rotate-key NAME [--grace-hours H]  new key; the old one works H more hours (default 24)
  revoke NAME                   cut the server's key off at once
  list-servers [--customer SLUG]   servers, their agents and when they were last seen
  add-channel NAME --webhook URL | --email ADDR [--customer SLUG]   where alerts go (the
                                staff's, or one customer's)
  route SERVER CHANNEL [--customer SLUG]   a server's alerts go to its own channels
  customers two-factor SLUG on|off   require two-factor of a customer's users
  customers staff-channel SLUG CHANNEL [--remove]   also send a customer's alerts to a staff
                                channel
  set-critical SERVER [--off]   alert when it goes offline and when it is back
  maintenance SERVER --minutes N   silence its alerts for a while
  set-rule METRIC THRESHOLD [--minutes N] [--server S]   threshold alerts
  send-test-alert [--channel C] [--customer SLUG] / list-alerts
  rollout start (--servers A,B | --customer SLUG | --percent N) [--wave-size N]
                                offer the panel's agent.py (MPANEL_AGENT_FILE) to opted-in
                                agents, a wave at a time | list | halt ID
  run-local                     `make run`: all of the above for this machine, plus its agent

Every command reads MPANEL_DATABASE_URL and the other MPANEL_* settings (settings.py), from the
environment or from a settings file: `python -m panel --config /etc/mpanel/panel.env COMMAND`.
"""
import argparse
import getpass
import logging
import os
import sys

import peewee

from . import settings as settings_module
from . import traffic

log = logging.getLogger("mpanel")


def _database(settings):
    from . import db

    database = db.bind(settings.database_url)
    db.init_schema(database)
    return database


# Set by `serve --workers N` in the environment of each process it starts: that process is a
# worker (its index; 0 also runs the background jobs) and never starts workers of its own.
WORKER_INDEX = "MPANEL_WORKER_INDEX"
REUSE_PORT = "MPANEL_REUSE_PORT"


def cmd_serve(settings, args):
    worker = os.environ.get(WORKER_INDEX)
    if settings.workers > 1 and worker is None:
        return _serve_workers(settings, settings.workers)
    from . import create_app, db, serving

    db.init_schema(db.bind(settings.database_url, max_connections=settings.threads + 4))
    app = create_app(settings, database=db.database_proxy.obj)
    if settings.job_interval > 0 and worker in (None, "0"):
        from . import jobs

        jobs.JobRunner(settings, every=settings.job_interval).start()
    log.info("serving host=%s port=%s threads=%s worker=%s connection_limit=%s "
             "header_timeout=%s database=%s", settings.host, settings.port, settings.threads,
             worker or 0, settings.connection_limit, settings.header_timeout,
             _redacted(settings.database_url))
    serving.serve(app, settings, reuse_port=bool(os.environ.get(REUSE_PORT)))
    return 0


def _serve_workers(settings, count):
    """N panel processes on one port: one Waitress process holds to about one core (its I/O
    thread and workers share a GIL), so a 2-core host wants two. Worker 0 also runs the
    background jobs. SIGTERM/SIGINT stop them all; a worker that dies takes the others down,
    so the service manager restarts a whole, consistent set."""
    import signal
    import subprocess

    if not hasattr(__import__("socket"), "SO_REUSEPORT"):  # Windows
        print("error: --workers needs SO_REUSEPORT (Linux, BSD); here run one process per "
              "port and let the reverse proxy spread the load", file=sys.stderr)
        return 2
    from . import db

    db.init_schema(db.bind(settings.database_url))  # once, before the workers race for it
    children = []
    for index in range(count):
        # MPANEL_WORKERS=1 as well as the index: the environment wins over a settings file,
        # so no worker reads N again from either and starts N of its own (issue 10: a fork
        # bomb).
        env = dict(os.environ, **{WORKER_INDEX: str(index), REUSE_PORT: "1"},
                   MPANEL_WORKERS="1", MPANEL_HOST=settings.host, MPANEL_PORT=str(settings.port))
        children.append(subprocess.Popen([sys.executable, "-m", "panel", "serve"], env=env))
    stopping = []

    def stop(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    import time

    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0 if stopping else 1


def cmd_init_db(settings, args):
    from . import db

    version = db.init_schema(db.bind(settings.database_url))
    print(f"schema version {version} ready at {_redacted(settings.database_url)}")
    return 0


def cmd_migrate(settings, args):
    from . import db, migrations
    from .errors import DATABASE_ERRORS, describe_database_error

    database = db.bind(settings.database_url)
    try:
        with database.connection_context():
            if args.check:
                version = migrations.current_version(database)
                waiting = migrations.pending(database)
            else:
                before, version, applied = migrations.migrate(database)
                print(migrations.describe(before, version, applied))
                waiting = []
            problems = migrations.schema_problems(database) if version else []
    except migrations.SchemaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DATABASE_ERRORS as err:
        print(f"error: cannot read the schema ({describe_database_error(err)}): "
              f"{' '.join(str(err).split())}", file=sys.stderr)
        return 2
    if version is None:
        print("no schema yet: `migrate` would create it")
        return 1
    if waiting:
        print(f"schema version {version}; pending: "
              f"{', '.join(f'{n:03d} {name}' for n, name, _ in waiting)}")
        return 1
    if problems:
        # Also after `migrate`: a table dropped by hand is not something a migration re-creates,
        # and a panel started on it would answer 503s (the systemd unit migrates, then serves).
        print(f"schema version {version}, but the database does not match it: "
              f"{'; '.join(problems)}")
        return 1
    if args.check:
        print(f"schema version {version}: up to date")
    return 0


def cmd_backup(settings, args):
    from pathlib import Path

    from . import db, migrations

    database = db.bind(settings.database_url)
    if db.is_postgres(database):
        print("this panel's database is PostgreSQL: back it up with pg_dump, e.g.\n"
              f"  pg_dump --format=custom --file=mpanel.dump '{_redacted(settings.database_url)}'"
              "\nand restore with pg_restore --clean --dbname=...", file=sys.stderr)
        return 2
    target = Path(args.file)
    if target.exists() and not args.force:
        print(f"error: {target} exists; pass --force to replace it", file=sys.stderr)
        return 2
    with database.connection_context():
        migrations.backup_sqlite(database, target)
    print(f"backed up {_redacted(settings.database_url)} to {target} "
          f"({target.stat().st_size:,} bytes)")
    return 0


def cmd_prune(settings, args):
    from . import jobs

    _database(settings)
    removed = jobs.housekeeping(settings)
    print("pruned: " + ", ".join(f"{what} {count}" for what, count in removed.items()))
    return 0


def cmd_create_admin(settings, args):
    from . import operations

    _database(settings)
    password = os.environ.get("MPANEL_ADMIN_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            print("error: set MPANEL_ADMIN_PASSWORD or run in a terminal", file=sys.stderr)
            return 2
        password = getpass.getpass(f"Password for {args.username}: ")
        if password != getpass.getpass("Again: "):
            print("error: passwords differ", file=sys.stderr)
            return 2
    try:
        customer = operations.customer_named(args.customer) if args.customer else None
        created = operations.set_admin(args.username, password, settings.bcrypt_rounds,
                                       role=args.role, customer_id=customer and customer.id)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    what = f"user of {shown(customer.name)}" if customer else "admin"
    print(f"{what} {args.username} ({args.role}) {'created' if created else 'password updated'}")
    return 0


def cmd_customers(settings, args):
    from . import models, operations

    _database(settings)
    if args.action == "list":
        listed = models.customers()
        if not listed:
            print("no customers; add one with: python -m panel customers add NAME")
        for customer in listed:
            print(f"{shown(customer.slug):<20} {shown(customer.name):<30} "
                  f"servers {len(models.customer_servers(customer.id))}  "
                  f"users {len(models.customer_users(customer.id))}")
        return 0
    if args.action == "add":
        customer = operations.add_customer(args.name, args.slug)
        print(f"customer {shown(customer.name)!r} added (slug {customer.slug})")
        return 0
    customer = operations.customer_named(args.customer)
    if args.action == "two-factor":
        operations.require_two_factor(customer.id, args.state == "on")
        print(f"two-factor is {'required of' if args.state == 'on' else 'up to'} "
              f"{shown(customer.name)}'s users")
        return 0
    if args.action == "staff-channel":
        channel = operations.channel_named(args.channel)
        operations.choose_staff_channel(customer.id, channel.id, chosen=not args.remove)
        print(f"{shown(customer.name)}'s alerts {'no longer go' if args.remove else 'also go'} "
              f"to the staff channel {shown(channel.name)!r}")
        return 0
    if args.action == "rename":
        operations.rename_customer(customer.id, args.name)
        print(f"customer {customer.slug} renamed to {shown(args.name)!r}")
        return 0
    servers = len(models.customer_servers(customer.id))
    operations.delete_customer(customer.id, customer.slug)
    print(f"customer {shown(customer.name)!r} deleted with its users; its {servers} server(s) "
          "are the staff's only now, their data kept")
    return 0


def cmd_move_server(settings, args):
    from . import operations

    _database(settings)
    server = operations.server_named(args.server)
    customer = operations.customer_named(args.customer) if args.customer else None
    operations.move_server(server.id, customer.id if customer else None)
    print(f"{shown(server.name)!r} is now " +
          (f"{shown(customer.name)}'s" if customer else "the staff's only"))
    return 0


def cmd_status_page(settings, args):
    from . import operations

    _database(settings)
    customer = operations.customer_named(args.customer)
    title = customer.status_title if args.title is None else args.title
    operations.set_status_page(customer.id, args.on, title)
    print(f"/status/{customer.slug} is " + ("on" if args.on else "off (a 404)") +
          (f", titled {shown(title.strip())!r}" if title.strip() else ""))
    return 0


def cmd_set_quota(settings, args):
    """A server's or a customer's traffic quota; what is not given is kept."""
    from . import operations, quotas

    _database(settings)
    if args.server:
        holder = operations.server_named(args.server)
        change, usage_of = operations.set_server_quota, \
            lambda row_id: quotas.server_usages(server_ids=[row_id])[row_id]
    else:
        holder = operations.customer_named(args.customer)
        change, usage_of = operations.set_customer_quota, \
            lambda row_id: quotas.customer_usages([row_id])[row_id][0]
    allowance = traffic.allowance_text(holder.traffic_allowance) if args.allowance is None \
        else args.allowance
    change(holder.id, holder.billing_day if args.billing_day is None else args.billing_day,
           allowance, args.basis or holder.traffic_basis)
    told = quotas.shown(usage_of(holder.id))
    print(f"{shown(args.server or args.customer)}: cycle {told['start']} to {told['end']}, "
          f"{told['text']}" + ("" if told["allowance"] else " (no allowance)"))
    return 0


def cmd_rollout(settings, args):
    from . import operations, upgrades

    _database(settings)
    if args.action == "start":
        servers = [operations.server_named(name.strip()).id
                   for name in (args.servers or "").split(",") if name.strip()]
        customer = operations.customer_named(args.customer) if args.customer else None
        rollout = upgrades.start_rollout(settings, "the command line", server_ids=servers,
                                         customer_id=customer.id if customer else None,
                                         percent=args.percent, wave_size=args.wave_size)
        print(f"rollout {rollout.id} started: agent {rollout.version} (sha256 "
              f"{rollout.sha256}) to {shown(rollout.target)}, waves of {rollout.wave_size}")
        return 0
    if args.action == "halt":
        upgrades.halt_rollout(args.id, "the command line")
        print(f"rollout {args.id} halted")
        return 0
    shipped = upgrades.shipped_agent(settings.agent_file)
    print(f"shipped agent: {shipped.version} sha256 {shipped.sha256} ({settings.agent_file})"
          if shipped else f"shipped agent: none ({settings.agent_file} is missing or has no "
                          "__version__ line)")
    for rollout, rows in upgrades.rollout_list():
        print(f"rollout {rollout.id} {rollout.state:<7} agent {rollout.version} to "
              f"{shown(rollout.target)}, waves of {rollout.wave_size}, started "
              f"{rollout.created_at:%Y-%m-%d %H:%M:%S} UTC by {shown(rollout.started_by)}"
              + (f": {shown(rollout.detail)}" if rollout.detail else ""))
        for row in rows:
            print(f"  wave {row.wave:<3} {shown(row.name):<30} {row.state:<9} "
                  f"runs {shown(row.agent_version or '?'):<10} {shown(row.detail or '')}")
    return 0


def cmd_reset_two_factor(settings, args):
    from . import operations

    _database(settings)
    try:
        was_on = operations.reset_two_factor(args.username)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log.warning("two-factor reset user=%s was_on=%s", args.username, was_on)
    print(f"two-factor of {args.username!r} is off" + ("" if was_on else " (it was not on)")
          + "; they log in with their password and may set it up again on /account")
    return 0


def cmd_create_token(settings, args):
    from . import models, tokens

    _database(settings)
    admin = models.admin_by_username(args.username)
    customer = models.customer_by_slug(args.customer) if args.customer else None
    try:
        if admin is None:
            raise ValueError(f"no user named {args.username!r}")
        if args.customer and customer is None:
            raise ValueError(f"no customer with slug {args.customer!r}")
        row, token = tokens.create(admin, args.name, args.scope,
                                   customer.id if customer else None, args.expires_days)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"token {row.name!r} of {admin.username!r} ({tokens.scope_label(row)}), id "
          f"{row.token_id}")
    print(f"API token (shown once, store it now): {token}")
    return 0


def cmd_tokens(settings, args):
    from . import models, tokens

    _database(settings)
    admin = models.admin_by_username(args.username)
    if admin is None:
        print(f"error: no user named {args.username!r}", file=sys.stderr)
        return 2
    for row in models.tokens_of(admin.id):
        state = ("revoked" if row.revoked_at else
                 f"expires {row.expires_at:%Y-%m-%d %H:%M}" if row.expires_at else "no expiry")
        used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
        print(f"{row.token_id}  {shown(row.name)}  {tokens.scope_label(row)}  created "
              f"{row.created_at:%Y-%m-%d %H:%M}  last used {used}  {state}")
    return 0


def cmd_revoke_token(settings, args):
    from . import models, tokens

    _database(settings)
    row = models.token_by_token_id(args.token_id)
    if row is None:
        print(f"error: no token with id {args.token_id!r}", file=sys.stderr)
        return 2
    if not tokens.revoke(row.admin, row, via="the command line"):
        print(f"token {args.token_id} was already revoked")
        return 0
    print(f"token {args.token_id} ({shown(row.name)} of {row.admin.username!r}) revoked")
    return 0


def cmd_add_server(settings, args):
    from . import operations

    _database(settings)
    try:
        server, key = operations.add_server(args.name, settings.bcrypt_rounds,
                                          critical=args.critical)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.quiet:
        print(key)
        return 0
    print(f"server {server.name!r} created with id {server.id}")
    print(f"API key (shown once, store it now): {key}")
    return 0


def cmd_rotate_key(settings, args):
    import datetime

    from . import operations

    _database(settings)
    hours = settings.key_grace_hours if args.grace_hours is None else args.grace_hours
    key = operations.rotate_key(args.name, settings.bcrypt_rounds,
                              datetime.timedelta(hours=hours),
                              settings_module.secret_bytes(settings))
    if args.quiet:
        print(key)
        return 0
    print(f"new API key for {args.name!r} (shown once): {key}")
    if hours > 0:
        print(f"the old key keeps working for {hours:g} h; a running agent is handed the new key "
              "with its next report and switches by itself")
    else:
        print("the old key stopped working at once: install the new key on the server")
    return 0


def cmd_revoke(settings, args):
    from . import operations

    _database(settings)
    operations.revoke_key(args.name)
    print(f"the API key of {args.name!r} is revoked; issue a new one with rotate-key")
    return 0


def cmd_add_channel(settings, args):
    from . import alerts, operations

    _database(settings)
    # argparse's exclusive group leaves exactly one --<kind> set.
    kind, target = next((name, getattr(args, name)) for name in alerts.CHANNEL_KINDS
                        if getattr(args, name) is not None)
    customer = operations.customer_named(args.customer) if args.customer else None
    operations.add_channel(args.name, kind, target, is_default=not args.not_default,
                           customer_id=customer and customer.id,
                           allowed=settings.allow_channel_networks)
    owner = f"{shown(customer.name)}'s" if customer else "the staff's"
    print(f"channel {args.name!r} ({kind}) added, {owner}"
          + ("" if args.not_default else "; its servers without routes of their own use it"))
    return 0


def cmd_route(settings, args):
    from . import operations

    _database(settings)
    customer = operations.customer_named(args.customer) if args.customer else None
    operations.route(args.server, args.channel, customer and customer.id)
    print(f"alerts of {args.server!r} now go to {args.channel!r} (and its other routes only)")
    return 0


def cmd_set_critical(settings, args):
    from . import operations

    _database(settings)
    operations.set_critical(args.server, not args.off)
    print(f"{args.server!r} is {'not ' if args.off else ''}critical")
    return 0


def cmd_maintenance(settings, args):
    from . import operations

    _database(settings)
    window = operations.add_maintenance(args.server, args.minutes, args.reason)
    print(f"alerts of {args.server!r} are silenced until {window.ends_at:%Y-%m-%d %H:%M} UTC; "
          "its data is still stored")
    return 0


def cmd_set_rule(settings, args):
    from . import operations

    _database(settings)
    operations.set_rule(args.metric, args.threshold, args.minutes, args.server,
                      enabled=not args.disable)
    scope = f"for {args.server!r}" if args.server else "for every server (default)"
    print(f"rule {args.metric} > {args.threshold:g} for {args.minutes} min "
          f"{'disabled' if args.disable else 'set'} {scope}")
    return 0


def cmd_send_test_alert(settings, args):
    from . import access, alerts, models, operations
    from .db import utcnow

    _database(settings)
    scope = access.EVERYTHING
    if args.customer:
        scope = scope.narrowed(operations.customer_named(args.customer).id)
    channels = [operations.channel_named(args.channel, scope.customer_id)] if args.channel \
        else models.visible_channels(scope)
    if not channels:
        print("error: no channels; add one with add-channel", file=sys.stderr)
        return 2
    queued = [alerts.queue_test(channel, utcnow()).id for channel in channels]
    alerts.deliver_due(settings.smtp, allowed=settings.allow_channel_networks, only=queued)
    failed = 0
    for channel in channels:
        delivery = models.latest_test_delivery(channel.id)
        if delivery.status == "sent":
            print(f"ok: {shown(channel.name)} ({channel.kind})")
        else:
            failed += 1
            # The error quotes what the webhook or mail server answered: outside text too.
            print(f"failed: {shown(channel.name)} ({channel.kind}): {shown(delivery.last_error)}")
    return 1 if failed else 0


def cmd_list_alerts(settings, args):
    from . import models

    _database(settings)
    for alert in models.recent_alerts(args.limit):
        deliveries = models.deliveries_of(alert.id)
        summary = ", ".join(f"{d.event}:{d.status}" + (f" ({d.last_error})" if d.last_error
                                                        and d.status != "sent" else "")
                            for d in deliveries) or ("silenced" if alert.silenced else "none")
        print(f"{alert.started_at:%Y-%m-%d %H:%M}  {shown(alert.state):<8} "
              f"{shown(alert.server.name):<20} {shown(alert.rule):<8} {shown(alert.message)}  "
              f"[deliveries: {shown(summary)}]")
    return 0


def cmd_list_servers(settings, args):
    from . import access, fleet_table, operations

    _database(settings)
    scope = access.EVERYTHING
    if args.customer:
        scope = scope.narrowed(operations.customer_named(args.customer).id)
    rows = fleet_table.server_rows(settings.offline_after, scope)
    if not rows:
        print("no servers; add one with: python -m panel add-server NAME")
        return 0
    header = ("ID", "NAME", "HOSTNAME", "STATUS", "LAST SEEN", "CPU %", "MEM %")
    table = [header] + [tuple(shown(cell) for cell in (
        r["id"], r["name"], r["hostname"], r["status"], r["last_seen"],
        "" if r["cpu"] is None else f"{r['cpu']:.1f}",
        "" if r["memory"] is None else f"{r['memory']:.1f}")) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def cmd_run_local(settings, args):
    from . import local

    return local.run(settings)


def shown(value):
    """Text from the database (agents', or typed in a page) as the CLI prints it: characters a
    terminal would act on are written as escapes (\\x1b, \\u202e), so a hostname can neither
    drive the admin's terminal nor pass for another row. Every listing prints through this."""
    from .errors import unshowable

    text = "" if value is None else str(value)
    if text.isprintable():  # the common case, and cheap
        return text
    return "".join(_escape(ch) if unshowable(ch) else ch for ch in text)


def _escape(ch):
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 \
        else f"\\U{code:08x}"


def _redacted(url):
    """The database URL without its password, for logs."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def build_parser():
    from . import access, alerts  # roles; its channel kinds are add-channel's flags

    parser = argparse.ArgumentParser(prog="python -m panel", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", help="debug, info, warning (default: MPANEL_LOG_LEVEL or "
                                             "info)")
    parser.add_argument("--config", help="settings file of MPANEL_*=value lines (the "
                                         "environment wins); also MPANEL_CONFIG")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the panel under Waitress")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int,
                       help="processes sharing the port (SO_REUSEPORT); one per core")
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("init-db", help="create or upgrade the schema").set_defaults(func=cmd_init_db)

    admin = sub.add_parser("create-admin", help="create an admin or reset its password")
    admin.add_argument("username")
    admin.add_argument("--role", choices=tuple(access.ROLES), default="admin")
    admin.add_argument("--customer", help="the customer (slug or name) of a customer role")
    admin.set_defaults(func=cmd_create_admin)

    reset = sub.add_parser("reset-two-factor", help="turn a locked-out user's two-factor off")
    reset.add_argument("username")
    reset.set_defaults(func=cmd_reset_two_factor)
    token = sub.add_parser("create-token", help="an API token of a user's, printed once")
    token.add_argument("username")
    token.add_argument("name")
    token.add_argument("--scope", choices=("read", "write"), default="read")
    token.add_argument("--customer", metavar="SLUG", help="bind it to this customer")
    token.add_argument("--expires-days", type=int, metavar="N")
    token.set_defaults(func=cmd_create_token)
    listed_tokens = sub.add_parser("tokens", help="a user's API tokens (never the tokens)")
    listed_tokens.add_argument("username")
    listed_tokens.set_defaults(func=cmd_tokens)
    revoke_token = sub.add_parser("revoke-token", help="revoke an API token at once")
    revoke_token.add_argument("token_id", help="its public id: mpt_<id>_...")
    revoke_token.set_defaults(func=cmd_revoke_token)
    customers = sub.add_parser("customers", help="customers: add, rename, delete, list")
    actions = customers.add_subparsers(dest="action", required=True)
    added = actions.add_parser("add", help="a new customer")
    added.add_argument("name")
    added.add_argument("--slug", help="[a-z0-9-]{1,40} (default: from the name)")
    renamed = actions.add_parser("rename", help="a customer's new name")
    renamed.add_argument("customer", help="slug or name")
    renamed.add_argument("name")
    deleted = actions.add_parser("delete", help="delete a customer and its users; its servers "
                                                "go back to the staff, data kept")
    deleted.add_argument("customer", help="slug or name")
    actions.add_parser("list", help="customers, their servers and users")
    two_factor = actions.add_parser("two-factor", help="require two-factor of a customer's "
                                                       "users (on), or leave it to each (off)")
    two_factor.add_argument("customer", help="slug or name")
    two_factor.add_argument("state", choices=("on", "off"))
    copy = actions.add_parser("staff-channel", help="also send a customer's alerts to a staff "
                                                    "channel")
    copy.add_argument("customer", help="slug or name")
    copy.add_argument("channel", help="the staff channel's name")
    copy.add_argument("--remove", action="store_true", help="stop sending them there")
    customers.set_defaults(func=cmd_customers)

    rollout = sub.add_parser("rollout", help="agent upgrades: start, list, halt a rollout")
    steps = rollout.add_subparsers(dest="action", required=True)
    started = steps.add_parser("start", help="offer the panel's agent.py to opted-in agents")
    chosen = started.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--servers", help="server names, comma-separated")
    chosen.add_argument("--customer", help="a customer's servers (slug or name)")
    chosen.add_argument("--percent", type=int, help="this share of the fleet (1-100)")
    started.add_argument("--wave-size", type=int, default=1,
                         help="servers per wave (default 1); a wave waits for the one before")
    steps.add_parser("list", help="the shipped agent and the latest rollouts with results")
    halted = steps.add_parser("halt", help="stop a running rollout before its next offers")
    halted.add_argument("id", type=int)
    rollout.set_defaults(func=cmd_rollout)

    move = sub.add_parser("move-server", help="give a server to a customer, or to the staff")
    move.add_argument("server")
    owner = move.add_mutually_exclusive_group(required=True)
    owner.add_argument("--customer", help="slug or name")
    owner.add_argument("--staff", action="store_true", help="staff-only: no customer")
    move.set_defaults(func=cmd_move_server)

    status = sub.add_parser("status-page", help="turn a customer's public status page on or off")
    status.add_argument("customer", help="slug or name")
    switch = status.add_mutually_exclusive_group(required=True)
    switch.add_argument("--on", action="store_true", help="/status/<slug> shows its published "
                                                          "servers")
    switch.add_argument("--off", dest="on", action="store_false", help="a 404 again")
    status.add_argument("--title", help="its title (at most 100 characters; default: kept)")
    status.set_defaults(func=cmd_status_page)

    quota = sub.add_parser("set-quota", help="a server's or customer's traffic quota: billing "
                                             "day, allowance a cycle, in + out or the larger")
    holder = quota.add_mutually_exclusive_group(required=True)
    holder.add_argument("--server", help="the server's name")
    holder.add_argument("--customer", help="slug or name: the allowance covers its servers")
    quota.add_argument("--billing-day", help="1-31: the cycle starts at its midnight (UTC)")
    quota.add_argument("--allowance", help='bytes a cycle: "500 GB", "2 TB", "2 TiB"; "" none')
    quota.add_argument("--basis", choices=tuple(traffic.BASES),
                       help="what the allowance counts: " + "; ".join(
                           f"{basis}: {label}" for basis, (label, _) in traffic.BASES.items()))
    quota.set_defaults(func=cmd_set_quota)

    add = sub.add_parser("add-server", help="create a server and print its API key once")
    add.add_argument("name")
    add.add_argument("--critical", action="store_true", help="alert when it goes offline")
    add.add_argument("--quiet", action="store_true", help="print only the key")
    add.set_defaults(func=cmd_add_server)

    rotate = sub.add_parser("rotate-key", help="issue a new key; the old one works for a while")
    rotate.add_argument("name")
    rotate.add_argument("--grace-hours", type=float,
                        help="how long the old key keeps working (default MPANEL_KEY_GRACE_HOURS, "
                             "24; 0 = stops at once)")
    rotate.add_argument("--quiet", action="store_true", help="print only the key")
    rotate.set_defaults(func=cmd_rotate_key)

    revoke = sub.add_parser("revoke", help="cut a server's key off at once")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_revoke)

    servers = sub.add_parser("list-servers", help="list servers")
    servers.add_argument("--customer", help="only this customer's (slug or name)")
    servers.set_defaults(func=cmd_list_servers)

    kinds = alerts.CHANNEL_KINDS.values()
    channel = sub.add_parser("add-channel", help="where alerts go: "
                             + " or ".join(kind.label for kind in kinds))
    channel.add_argument("name")
    target = channel.add_mutually_exclusive_group(required=True)
    for kind in kinds:
        target.add_argument(f"--{kind.name}", help=kind.target_help)
    channel.add_argument("--not-default", action="store_true",
                         help="only for servers routed to it")
    channel.add_argument("--customer", help="the customer (slug or name) whose channel it is "
                                            "(default: the staff's)")
    channel.set_defaults(func=cmd_add_channel)

    route = sub.add_parser("route", help="send a server's alerts to a channel")
    route.add_argument("server")
    route.add_argument("channel")
    route.add_argument("--customer", help="the channel is this customer's (slug or name; "
                                          "default: the staff's)")
    route.set_defaults(func=cmd_route)

    critical = sub.add_parser("set-critical", help="alert when the server goes offline")
    critical.add_argument("server")
    critical.add_argument("--off", action="store_true")
    critical.set_defaults(func=cmd_set_critical)

    window = sub.add_parser("maintenance", help="silence a server's alerts for a while")
    window.add_argument("server")
    window.add_argument("--minutes", type=int, required=True)
    window.add_argument("--reason")
    window.set_defaults(func=cmd_maintenance)

    rule = sub.add_parser("set-rule", help="threshold alert: METRIC above THRESHOLD")
    from . import alerts  # the rule metrics are the figure table's (alerts.METRICS)

    rule.add_argument("metric", choices=alerts.METRICS)
    rule.add_argument("threshold", type=float)
    rule.add_argument("--minutes", type=int, default=5, help="for how long (default 5)")
    rule.add_argument("--server", help="override for one server (default: every server)")
    rule.add_argument("--disable", action="store_true")
    rule.set_defaults(func=cmd_set_rule)

    test = sub.add_parser("send-test-alert", help="send a test alert to every channel")
    test.add_argument("--channel")
    test.add_argument("--customer", help="this customer's channels (slug or name)")
    test.set_defaults(func=cmd_send_test_alert)

    migrate = sub.add_parser("migrate", help="apply pending schema migrations")
    migrate.add_argument("--check", action="store_true",
                         help="change nothing; exit 1 when migrations are pending")
    migrate.set_defaults(func=cmd_migrate)
    backup = sub.add_parser("backup", help="copy the SQLite database (online); PostgreSQL: hint")
    backup.add_argument("file")
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    backup.set_defaults(func=cmd_backup)
    sub.add_parser("prune", help="apply retention now (the panel also does it hourly)") \
        .set_defaults(func=cmd_prune)

    listing = sub.add_parser("list-alerts", help="recent alerts and their deliveries")
    listing.add_argument("--limit", type=int, default=30)
    listing.set_defaults(func=cmd_list_alerts)
    sub.add_parser("run-local", help="set up and run panel + local agent (make run)") \
        .set_defaults(func=cmd_run_local)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    # The settings file fills in what the environment does not set, for every reader of the
    # environment (settings, MPANEL_WORKERS, MPANEL_LOG_LEVEL, MPANEL_ADMIN_PASSWORD, ...).
    config_file = args.config or os.environ.get("MPANEL_CONFIG")
    if config_file:
        try:
            settings_module.apply_env_file(config_file)
        except (ValueError, OSError) as err:
            print(f"error: settings file: {err}", file=sys.stderr)
            return 2
    level = (args.log_level or os.environ.get("MPANEL_LOG_LEVEL") or "info").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = settings_module.from_env(host=getattr(args, "host", None),
                                            port=getattr(args, "port", None),
                                            workers=getattr(args, "workers", None))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        return args.func(settings, args)
    except (ValueError, peewee.OperationalError) as err:
        from . import migrations

        if isinstance(err, migrations.SchemaError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        # A bad URL or an unreachable database: say so in one line, not a traceback.
        print(f"error: {str(err).strip()} (database {_redacted(settings.database_url)})",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
