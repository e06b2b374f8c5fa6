"""The Upgrades page (/upgrades, staff admins only: auth="staff-admin", and two-factor where the
auth plugin requires it): the agent.py this panel ships, a form to start a rollout of it, and
every recent rollout with each server's result. Starting and halting go through the same
functions as `python -m panel rollout` (upgrades.start_rollout, upgrades.halt_rollout)."""
import bottle

from . import models, upgrades
from .access import EVERYTHING
from .views import template


def build_upgrade_page(settings):
    app = bottle.Bottle()

    def page(session, error="", status=200):
        bottle.response.status = status
        return template("upgrades.tpl", title="Upgrades · mPanel", session=session, error=error,
                        shipped=upgrades.shipped_agent(settings.agent_file),
                        agent_file=settings.agent_file, rollouts=upgrades.rollout_list(),
                        fleet=models.fleet_for_rollout(EVERYTHING),
                        customers=models.customers(), max_wave=upgrades.MAX_WAVE_SIZE)

    def whole_number(name, text):
        if not (text.isascii() and text.isdigit()) or len(text) > 9:
            raise ValueError(f"{name} must be a whole number")
        return int(text)

    @app.get("/upgrades", auth="staff-admin")
    def upgrades_view(session, access):
        return page(session)

    @app.post("/upgrades", auth="staff-admin")
    def start(session, access):
        forms = bottle.request.forms
        choice = (forms.getunicode("choice") or "").strip()
        try:
            wave_size = whole_number("the wave size", (forms.getunicode("wave_size") or "1")
                                     .strip())
            chosen = {}
            if choice == "servers":
                chosen["server_ids"] = [whole_number("a server id", text.strip())
                                        for text in forms.getall("server_id")[:10000]]
                if not chosen["server_ids"]:
                    raise ValueError("choose at least one server")
            elif choice == "customer":
                chosen["customer_id"] = whole_number("the customer", (
                    forms.getunicode("customer_id") or "").strip())
            elif choice == "percent":
                chosen["percent"] = whole_number("the percentage", (
                    forms.getunicode("percent") or "").strip())
            else:
                raise ValueError("choice must be servers, customer or percent")
            upgrades.start_rollout(settings, session.admin.username, wave_size=wave_size,
                                   **chosen)
        except ValueError as err:
            return page(session, str(err), 409 if "running" in str(err) else 400)
        return bottle.redirect("/upgrades")

    @app.post("/upgrades/<rollout_id:int>/halt", auth="staff-admin")
    def halt(rollout_id, session, access):
        try:
            upgrades.halt_rollout(rollout_id, session.admin.username)
        except ValueError as err:
            return page(session, str(err), 404)
        return bottle.redirect("/upgrades")

    return app
