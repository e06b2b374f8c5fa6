"""Who may see and change what: the one place that decides it (issue 13).

Every user has a role (ROLES). Staff (`admin`, `viewer`) see every server; a customer user
(`customer-admin`, `customer-viewer`) belongs to one customer and sees that customer's servers
only. An `Access` is built from the session by the auth plugin and handed to the route; the
route's `auth=` declaration says what it needs (NEEDS), and every query that returns servers,
agents, samples, alerts or events takes the Access and is scoped by it (models.py). A view never
builds a filter of its own.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Role:
    name: str
    label: str
    staff: bool       # sees every server, and the staff pages (customers, rules, security)
    may_change: bool  # changes what it sees (a customer-admin: its customer's servers)


ROLES = {role.name: role for role in (
    Role("admin", "admin", staff=True, may_change=True),
    Role("viewer", "viewer (read-only)", staff=True, may_change=False),
    Role("customer-admin", "customer admin", staff=False, may_change=True),
    Role("customer-viewer", "customer viewer (read-only)", staff=False, may_change=False),
)}
STAFF_ROLES = tuple(name for name, role in ROLES.items() if role.staff)
CUSTOMER_ROLES = tuple(name for name, role in ROLES.items() if not role.staff)


@dataclasses.dataclass(frozen=True)
class Access:
    """What one user may see and do. `customer_id` None: every server (staff)."""

    customer_id: int | None
    may_change: bool

    @property
    def staff(self):
        return self.customer_id is None

    @classmethod
    def of(cls, admin):
        """The Access of a user row (models.Admin)."""
        role = ROLES.get(admin.role)
        if role is None or role.staff != (admin.customer_id is None):
            # The database's CHECK keeps this from happening; should it ever, the user sees
            # nothing rather than everything.
            return NOBODY
        return cls(customer_id=None if role.staff else admin.customer_id,
                   may_change=role.may_change)

    def narrowed(self, customer_id):
        """Staff looking at one customer's servers (the pages' `?customer=` filter); a
        customer user's scope never widens or moves."""
        if not self.staff or customer_id is None:
            return self
        return dataclasses.replace(self, customer_id=customer_id)


# Everything (the CLI, background jobs); and nothing (a user row that breaks the rules above):
# customer id 0 is no customer's, as ids start at 1.
EVERYTHING = Access(customer_id=None, may_change=True)
NOBODY = Access(customer_id=0, may_change=False)

# The refusals (403: the page exists, and saying that it is for staff or for admins gives
# nothing away; a server of another customer is a 404, see models.server_or_none).
READ_ONLY = "this account is read-only: changing things needs an admin account"
STAFF_ONLY = "this page is for the panel's staff"


def _may_change(access):
    return None if access.may_change else READ_ONLY


def _staff(access):
    return None if access.staff else STAFF_ONLY


def _staff_admin(access):
    return _staff(access) or _may_change(access)


# What a route's `auth=` asks for: a function of the Access -> None when allowed, else why not.
NEEDS = {
    # Any logged-in user, also one that must still set up two-factor (auth.two_factor_required):
    # the account page, and logging out.
    "account": lambda access: None,
    "viewer": lambda access: None,
    "admin": _may_change,
    "staff": _staff,
    "staff-admin": _staff_admin,
}


# What an API token's route (api_v1.py, `auth="token-read"` ...) asks for, by the same rules:
# a token's Access is its scope within its owner's (tokens.access_of).
TOKEN_NEEDS = {
    "token-read": NEEDS["viewer"],
    "token-write": NEEDS["admin"],
    "token-staff": NEEDS["staff"],
    "token-staff-write": NEEDS["staff-admin"],
}
