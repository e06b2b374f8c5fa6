"""Operations shared by the CLI, `make run` and (later) the admin pages: creating servers and
their keys, and admin accounts. Each validates its input and raises ValueError with a message
fit for a person."""
import peewee

from . import auth, models
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
    key, key_id = auth.new_api_key()
    try:
        with database_proxy.atomic():
            server = models.Server.create(name=name, critical=critical)
            models.Agent.create(server=server, api_key_id=key_id,
                                api_key_hash=auth.hash_secret(key, rounds))
    except peewee.IntegrityError:
        raise ValueError(f"a server named {name!r} already exists") from None
    return server, key


def replace_key(server, rounds):
    """Give `server`'s agent a new key at once, cutting the old one off; return the key."""
    key, key_id = auth.new_api_key()
    models.Agent.update(api_key_id=key_id, api_key_hash=auth.hash_secret(key, rounds),
                        updated_at=utcnow()).where(models.Agent.server == server).execute()
    return key


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
