"""Operations shared by the CLI, `make run` and (later) the admin pages: creating servers and
their keys, and admin accounts. Each validates its input and raises ValueError with a message
fit for a person."""
import peewee

from . import auth, keys, models
from .db import database_proxy, utcnow


def _check_name(name, what, max_length):
    if not name or not name.strip():
        raise ValueError(f"{what} must not be empty")
    if len(name) > max_length:
        raise ValueError(f"{what} must be at most {max_length} characters")
    if any(ord(ch) < 32 for ch in name):
        raise ValueError(f"{what} must not contain control characters")


def add_server(name, rounds, critical=False):
    """Create a server with a pending agent; return (server, key). The key is not stored."""
    _check_name(name, "server name", 100)
    key, key_id = keys.new_api_key()
    try:
        with database_proxy.atomic():
            server = models.Server.create(name=name, critical=critical)
            models.Agent.create(server=server, api_key_id=key_id,
                                api_key_hash=keys.hash_secret(key, rounds))
    except peewee.IntegrityError:
        raise ValueError(f"a server named {name!r} already exists") from None
    return server, key


def agent_of(server_name):
    """The agent of the server called `server_name`, or ValueError."""
    agent = (models.Agent.select(models.Agent, models.Server).join(models.Server)
             .where(models.Server.name == server_name).first())
    if agent is None:
        raise ValueError(f"no server named {server_name!r}")
    return agent


def rotate_key(server_name, rounds, grace, secret):
    """New key for the server; the old one keeps working for `grace`. Returns the new key."""
    return keys.rotate(agent_of(server_name), rounds, grace, secret)


def revoke_key(server_name):
    keys.revoke(agent_of(server_name))


def set_admin(username, password, rounds, role="admin"):
    """Create the admin, or set its password and role; return True when created."""
    _check_name(username, "username", 64)
    if len(password) < 8:
        raise ValueError("password must be at least 8 characters")
    hashed = auth.hash_password(password, rounds)
    with database_proxy.atomic():
        admin = models.Admin.get_or_none(models.Admin.username == username)
        if admin is None:
            models.Admin.create(username=username, password_hash=hashed, role=role)
            return True
        models.Admin.update(password_hash=hashed, role=role).where(
            models.Admin.id == admin.id).execute()
        return False
