"""Operations shared by the CLI, `make run` and (later) the admin pages: creating servers and
their keys, and admin accounts. Each validates its input and raises ValueError with a message
fit for a person."""
import contextlib
import re

import peewee

from . import access, auth, keys, models, traffic
from .db import database_proxy, utcnow
from .errors import unshowable


class NameTaken(ValueError):
    """A name another row of its kind already has: the pages and the API answer 409."""


@contextlib.contextmanager
def unique(what):
    """Write in one transaction; a unique index's refusal is NameTaken("<what> already
    exists"). Names are unique per owner, so the message names nothing of anyone else's."""
    try:
        with database_proxy.atomic():
            yield
    except peewee.IntegrityError:
        raise NameTaken(f"{what} already exists") from None


def _check_name(name, what, max_length):
    if not name or not name.strip():
        raise ValueError(f"{what} must not be empty")
    if len(name) > max_length:
        raise ValueError(f"{what} must be at most {max_length} characters")
    if any(unshowable(ch) for ch in name):  # C1 controls, DEL and bidi overrides too
        raise ValueError(f"{what} must not contain control or format characters")


def add_server(name, rounds, critical=False, customer_id=None):
    """Create a server with a pending agent (the customer's, or the staff's only); return
    (server, key). The key is not stored."""
    _check_name(name, "server name", 100)
    if customer_id is not None:
        customer_id = customer_by_id(customer_id).id
    key, key_id = keys.new_api_key()
    with unique(f"a server named {name!r}"):
        server = models.Server.create(name=name, critical=critical, customer=customer_id)
        models.Agent.create(server=server, **keys.key_columns(key, key_id, rounds))
    return server, key


def agent_of(server_name):
    """The agent of the server called `server_name`, or ValueError."""
    agent = models.agent_of_server_named(server_name)
    if agent is None:
        raise ValueError(f"no server named {server_name!r}")
    return agent


def rotate_key(server_name, rounds, grace, secret):
    """New key for the server; the old one keeps working for `grace`. Returns the new key."""
    return keys.rotate(agent_of(server_name), rounds, grace, secret)


def revoke_key(server_name):
    keys.revoke(agent_of(server_name))


def set_admin(username, password, rounds, role="admin", customer_id=None):
    """Create the user, or set its password, role and customer (logging it out everywhere);
    return True when created. Staff roles have no customer, customer roles exactly one
    (access.ROLES; the database's CHECK says the same)."""
    _check_name(username, "username", 64)
    if role not in access.ROLES:
        raise ValueError(f"role must be one of {', '.join(access.ROLES)}")
    if access.ROLES[role].staff and customer_id is not None:
        raise ValueError(f"a {role} is staff and belongs to no customer")
    if not access.ROLES[role].staff:
        if customer_id is None:
            raise ValueError(f"a {role} belongs to a customer: name one")
        customer_id = customer_by_id(customer_id).id
    if len(password) < 8:
        raise ValueError("password must be at least 8 characters")
    hashed = auth.hash_password(password, rounds)
    with database_proxy.atomic():
        admin = models.admin_by_username(username)
        if admin is None:
            models.Admin.create(username=username, password_hash=hashed, role=role,
                                customer=customer_id)
            return True
        models.set_admin_password(admin.id, hashed, role, customer_id)
        return False


def reset_two_factor(username):
    """Turn a locked-out user's two-factor off (its secret and recovery codes go), recorded in
    the security log; they log in with their password and may set it up again. -> whether it
    was on."""
    admin = models.admin_by_username(username)
    if admin is None:
        raise ValueError(f"no user named {username!r}")
    was_on = admin.totp_enabled_at is not None
    with database_proxy.atomic():
        models.end_two_factor(admin.id)
        models.record_auth_event("two_factor_reset",
                                 detail=f"user {username}, from the command line")
    return was_on


def delete_user(user_id):
    """Delete a user; their sessions end with them."""
    user = models.by_id(models.Admin, user_id)
    if user is None:
        raise ValueError(f"no user with id {user_id}")
    with database_proxy.atomic():
        models.delete_user(user.id)
    return user.username


# ===== Customers ================================================================================

SLUG = re.compile(r"[a-z0-9-]{1,40}")


def slug_of(name):
    """A slug from a name: 'Acme Hosting GmbH' -> 'acme-hosting-gmbh'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")


def customer_by_id(customer_id):
    customer = models.by_id(models.Customer, customer_id)
    if customer is None:
        raise ValueError(f"no customer with id {customer_id}")
    return customer


def customer_named(name_or_slug):
    """The customer with this slug, or this name; ValueError when none has."""
    customer = models.customer_by_slug(name_or_slug) or models.customer_by_name(name_or_slug)
    if customer is None:
        raise ValueError(f"no customer named {name_or_slug!r}")
    return customer


def add_customer(name, slug=None):
    """Create a customer; the slug (for a later /status/<slug>) is made from the name unless
    given. -> the customer."""
    _check_name(name, "customer name", 100)
    name = name.strip()
    slug = slug_of(name) if not slug else slug
    if not SLUG.fullmatch(slug):
        raise ValueError("slug must be 1 to 40 of a-z, 0-9 and '-'")
    with unique(f"a customer named {name!r} or with slug {slug!r}"):
        return models.Customer.create(name=name, slug=slug)


def rename_customer(customer_id, name):
    _check_name(name, "customer name", 100)
    name = name.strip()
    customer = customer_by_id(customer_id)
    with unique(f"a customer named {name!r}"):
        models.update_customer(customer.id, name=name)
    return name


def delete_customer(customer_id, confirm_slug):
    """Delete the customer and its users (their sessions end); its servers go back to the
    staff only, every sample kept. `confirm_slug` must be its slug: unlike the name, no rename
    changes it, so a confirmation typed from the page holds."""
    customer = customer_by_id(customer_id)
    if (confirm_slug or "").strip() != customer.slug:
        raise ValueError("type the customer's slug exactly to confirm the deletion")
    with database_proxy.atomic():
        models.delete_customer_channels(customer.id)
        models.delete_customer(customer.id)
    return customer.name


def move_server(server_id, customer_id):
    """Give the server to a customer (None: the staff's only). -> the customer or None."""
    server = server_by_id(server_id)
    customer = customer_by_id(customer_id) if customer_id is not None else None
    with database_proxy.atomic():
        models.move_server(server.id, customer.id if customer else None)
        models.drop_foreign_routes(server.id, customer.id if customer else None)
    return customer


def require_two_factor(customer_id, required=True):
    """Make this customer's users set up two-factor before any other page (or stop)."""
    customer = customer_by_id(customer_id)
    models.set_customer_two_factor(customer.id, required)
    return customer


STATUS_TITLE_MAX = 100


def set_status_page(customer_id, on, title):
    """Turn the customer's public status page (/status/<slug>) on or off and set its title
    (empty: "Status"). -> the customer as it was before."""
    title = (title or "").strip()
    if title:
        _check_name(title, "status page title", STATUS_TITLE_MAX)
    customer = customer_by_id(customer_id)
    models.update_customer(customer.id, status_page=bool(on), status_title=title)
    return customer


# ===== Alerting set-up ==========================================================================

def server_named(name):
    server = models.server_by_name(name)
    if server is None:
        raise ValueError(f"no server named {name!r}")
    return server


def add_channel(name, kind, target, is_default=True, customer_id=None, allowed=()):
    """A channel of the staff's (`customer_id` None) or of one customer's, whose target may
    reach public addresses and the `allowed` networks only (alerts.check_channel)."""
    from . import alerts

    _check_name(name, "channel name", 64)
    alerts.check_channel(kind, target, customer_id, allowed)
    if customer_id is not None:
        customer_id = customer_by_id(customer_id).id
    with unique(f"a channel named {name!r}"):
        return models.Channel.create(name=name, kind=kind, target=target[:2000],
                                     is_default=is_default, customer=customer_id)


def edit_channel(channel, name, target, is_default, allowed=()):
    """New name, target and default flag for a channel the caller may change (its kind
    stays: a target is checked against it, and against `allowed` for a customer's). An
    empty target keeps a secret one, which the page never shows (alerts.shown_target)."""
    from . import alerts

    _check_name(name, "channel name", 64)
    kind = alerts.CHANNEL_KINDS.get(channel.kind)
    if not target and kind is not None and kind.shown:
        target = channel.target
    alerts.check_channel(channel.kind, target, channel.customer_id, allowed)
    with unique(f"a channel named {name!r}"):
        models.update_channel(channel.id, name=name, target=target[:2000],
                              is_default=bool(is_default))


def channel_named(name, customer_id=None):
    """The staff's channel of this name, or (`customer_id`) that customer's."""
    channel = models.channel_of(customer_id, name)
    if channel is None:
        raise ValueError(f"no channel named {name!r}")
    return channel


def check_route(server, channel):
    """A server's alerts may go to the staff's channels or its own customer's, never to
    another customer's."""
    if channel.customer_id is not None and channel.customer_id != server.customer_id:
        raise ValueError(f"channel {channel.name!r} is another customer's: a server's alerts "
                         "go to its own customer's channels or the staff's")


def route(server_name, channel_name, customer_id=None):
    """Send this server's alerts to this channel (the staff's, or `customer_id`'s) and, from
    now on, not to its owner's defaults."""
    server, channel = server_named(server_name), channel_named(channel_name, customer_id)
    route_to(server, channel)


def route_to(server, channel):
    check_route(server, channel)
    models.add_route(server.id, channel.id)


def choose_staff_channel(customer_id, channel_id, chosen=True):
    """Also send (or stop sending) this customer's alerts to a staff channel."""
    customer = customer_by_id(customer_id)
    channel = models.by_id(models.Channel, channel_id)
    if channel is None or channel.customer_id is not None:
        raise ValueError(f"no staff channel with id {channel_id}")
    if chosen:
        models.choose_staff_channel(customer.id, channel.id)
    else:
        models.unchoose_staff_channel(customer.id, channel.id)
    return customer, channel


def set_critical(server_name, critical=True):
    models.update_server(server_named(server_name).id, critical=critical)


def add_maintenance(server_name, minutes, reason=None, starts_at=None, server_id=None):
    """Silence the server's alerts for `minutes` (at most 30 days) from `starts_at` (now)."""
    import datetime

    if not 1 <= minutes <= 30 * 1440:
        raise ValueError("a maintenance window lasts from a minute to 30 days")
    server = server_by_id(server_id) if server_id is not None else server_named(server_name)
    starts_at = starts_at or utcnow()
    return models.MaintenanceWindow.create(server=server.id, starts_at=starts_at,
                                           ends_at=starts_at + datetime.timedelta(minutes=minutes),
                                           reason=(reason or "")[:200] or None)


def end_maintenance(server_id, now=None):
    """End the server's current maintenance windows now."""
    now = now or utcnow()
    return models.end_maintenance_windows(server_by_id(server_id).id, now)


def unroute(server_id, channel_id):
    models.remove_route(server_id, channel_id)


def set_rule(metric, threshold, minutes, server_name=None, enabled=True):
    """Create or change the global rule for `metric`, or a server's override."""
    from . import alerts

    if metric not in alerts.METRICS:
        raise ValueError(f"metric must be one of {', '.join(alerts.METRICS)}")
    if not 0 <= minutes <= 1440:  # 0: the first bad sample fires
        raise ValueError("minutes must be between 0 and 1440 (a day)")
    if not 0 <= threshold <= 1e6:  # also refuses NaN
        raise ValueError("threshold must be between 0 and 1,000,000")
    threshold = models.storable_real(threshold)
    server = server_named(server_name) if server_name else None
    with database_proxy.atomic():
        existing = models.rule_of(metric, server.id if server else None)
        if existing:
            models.update_rule(existing.id, threshold=threshold, minutes=minutes, enabled=enabled)
        else:
            models.AlertRule.create(server=server.id if server else None, metric=metric,
                                    threshold=threshold, minutes=minutes, enabled=enabled)


# ===== Managing a server (the dashboard's manage box) ===========================================

def server_by_id(server_id):
    server = models.by_id(models.Server, server_id)
    if server is None:
        raise ValueError(f"no server with id {server_id}")
    return server


def rename_server(server_id, name):
    _check_name(name, "server name", 100)
    name = name.strip()
    server = server_by_id(server_id)
    with unique(f"a server named {name!r}"):
        models.update_server(server.id, name=name)
    return name


def set_flag(server_id, flag, value):
    """Turn `critical` or `public_status` on or off."""
    if flag not in ("critical", "public_status"):
        raise ValueError(f"unknown flag {flag!r}")
    models.update_server(server_by_id(server_id).id, **{flag: bool(value)})


def delete_server(server_id, confirm_name):
    """Delete the server, its agent, key and all its data. `confirm_name` must be its name:
    a stray click or a forged request deletes nothing."""
    server = server_by_id(server_id)
    if (confirm_name or "").strip() != server.name:
        raise ValueError("type the server's name exactly to confirm the deletion")
    agent = models.agent_of_server(server.id)
    with database_proxy.atomic():
        models.delete_server_and_data(server.id, agent.id if agent else None)
        models.record_auth_event("server_deleted", server_id=server.id,
                                 detail=f"server {server.name}"[:200])
    if agent is not None:
        keys.AGENT_ROWS.forget(agent)
    return server.name


# ===== Traffic quotas ===========================================================================

def _quota(billing_day, allowance, basis):
    """Typed text (a form's, the CLI's) -> (billing day, allowance bytes or None, basis), or
    ValueError naming the field's problem."""
    return (traffic.parse_billing_day(billing_day), traffic.parse_allowance(allowance),
            traffic.parse_basis(basis))


def set_server_quota(server_id, billing_day, allowance, basis="sum"):
    """A server's billing day (1-31), allowance a cycle ("500 GB", "" for none) and what it
    counts (traffic.BASES). -> the server."""
    server = server_by_id(server_id)
    models.set_quota(models.Server, server.id, *_quota(billing_day, allowance, basis))
    return server


def set_customer_quota(customer_id, billing_day, allowance, basis="sum"):
    """The same for a customer: its allowance covers all its servers, on its billing day."""
    customer = customer_by_id(customer_id)
    models.set_quota(models.Customer, customer.id, *_quota(billing_day, allowance, basis))
    return customer
