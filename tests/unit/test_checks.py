"""Service checks as pure functions: what each judge finds in a sample's services, and how the
steps open, hold, resolve and forget one alert per subject."""
import datetime
import types

from panel import alerts, checks

AT = datetime.datetime(2026, 12, 2, 12, 0)
MINUTE = datetime.timedelta(minutes=1)


def state(bad_since=None, text="", was=None):
    return types.SimpleNamespace(bad_since=bad_since, text=text, was=was)


def test_a_service_never_seen_is_not_down_and_one_seen_then_gone_is():
    judge = checks.BY_METRIC["service_down"].judge
    assert judge({}, {}, 0, {}) == {}
    assert judge({"mysql": {"connections": 3}}, {}, 0, {})["mysql"].bad is False
    gone = judge({}, {}, 0, {"mysql": "up"})["mysql"]
    assert gone.bad and gone.text == "no longer answering"
    failing = judge({}, {"mysql": "access denied"}, 0, {"mysql": "up"})["mysql"]
    assert failing.bad and "access denied" in failing.text
    # A collector failing on a server where its service was never seen: not "down".
    assert judge({}, {"redis": "refused"}, 0, {}) == {}
    # ... unless the agent says it saw it: "gone" is its word for a service it answered for.
    assert judge({}, {"redis": "gone: redis is not listening"}, 0, {})["redis"].bad


def test_certificates_are_judged_each_by_its_own_days_left():
    judge = checks.BY_METRIC["cert_expiry"].judge
    services = {"certificates": {"certificates": [
        {"name": "shop.example.com", "daysLeft": 3},
        {"name": "www.example.com", "daysLeft": 80},
        {"name": "old.example.com", "daysLeft": -2}]}}
    found = judge(services, {}, 14, {})
    assert found["shop.example.com"].bad and found["shop.example.com"].text == "expires in 3 days"
    assert not found["www.example.com"].bad
    assert found["old.example.com"].bad and found["old.example.com"].text == "expired 2 days ago"


def test_a_bad_subject_fires_after_its_minutes_and_resolves_when_good():
    check = checks.BY_METRIC["fpm_queue"]
    bad = {"pool www": checks.Finding(4, True, "4 connections waiting in the listen queue")}
    [first] = checks.steps(check, 0, 5, bad, {}, AT)
    assert first.bad_since == AT and not first.fire
    held = {"pool www": state(AT, first.text, "0 connections waiting in the listen queue")}
    [later] = checks.steps(check, 0, 5, bad, held, AT + 5 * MINUTE)
    assert later.fire and later.bad_since == AT
    message = checks.message(check, "pool www", later, 0)
    assert message == ("PHP-FPM listen queue: pool www: 4 connections waiting in the listen "
                       "queue; was 0 connections waiting in the listen queue; above 0")
    good = {"pool www": checks.Finding(0, False, "0 connections waiting in the listen queue")}
    [back] = checks.steps(check, 0, 5, good, held, AT + 6 * MINUTE)
    assert back.resolve and back.bad_since is None


def test_a_subject_gone_from_the_sample_is_resolved_and_forgotten():
    check = checks.BY_METRIC["cert_expiry"]
    [step] = checks.steps(check, 14, 0, {}, {"old.example.com": state(AT, "expires in 3 days")},
                          AT + MINUTE)
    assert step.gone and step.resolve


def test_every_check_is_a_rule_metric_with_a_built_in_rule():
    built_in = {metric for metric, *_ in alerts.built_in_rules()}
    for check in checks.CHECKS:
        assert check.metric in alerts.METRICS and check.metric in built_in
    assert len(set(alerts.METRICS)) == len(alerts.METRICS)


def test_subject_keys_fit_the_open_key_column_whatever_the_subject():
    key = alerts.subject_key("cert_expiry", "x" * 300 + ".example.com")
    assert len(key) <= 32 and key != alerts.subject_key("cert_expiry", "y.example.com")


def test_mysql_judges_read_the_collector_fields():
    replica = {"mysql": {"up": True, "connections": 90, "maxConnections": 100,
                         "connectionsPercent": 90.0, "replicaIoRunning": True,
                         "replicaSqlRunning": False, "replicaSqlErrno": 1062}}
    [(subject, found)] = checks.BY_METRIC["mysql_conns"].judge(replica, {}, 80, {}).items()
    assert found.bad and found.text == "90 of 100 connections (90 %)"
    stopped = checks.BY_METRIC["mysql_replica"].judge(replica, {}, 300, {})["mysql"]
    assert stopped.bad and stopped.text == "replication SQL thread stopped (error 1062)"
    lagging = {"mysql": {"replicaIoRunning": True, "replicaSqlRunning": True, "replicaLag": 900}}
    assert checks.BY_METRIC["mysql_replica"].judge(lagging, {}, 300, {})["mysql"].bad
    assert checks.BY_METRIC["mysql_replica"].judge({"mysql": {"up": True}}, {}, 300, {}) == {}
    down = checks.BY_METRIC["service_down"].judge({"mysql": {"up": False}}, {}, 0,
                                                  {"mysql": "up"})
    assert down["mysql"].bad and down["mysql"].text == "not answering"


def test_units_and_watched_processes_are_judged_by_name():
    services = {"systemd": {"failed": 1, "units": [
        {"name": "nginx.service", "activeState": "active", "subState": "running"},
        {"name": "backup.service", "activeState": "failed", "subState": "failed"}]},
        "watched": {"processes": [{"name": "named", "count": 0}, {"name": "crond", "count": 1}]}}
    units = checks.BY_METRIC["unit_failed"].judge(services, {}, 0, {})
    assert units["backup.service"].bad and not units["nginx.service"].bad
    watched = checks.BY_METRIC["process_down"].judge(services, {}, 1, {})
    assert watched["named"].bad and watched["named"].text == "0 running"
    assert not watched["crond"].bad


def test_a_site_name_is_judged_by_its_most_urgent_certificate_whatever_the_order():
    """Renewed on disk, nginx not reloaded: the file nginx's config names expires in 90 days,
    the handshake still gets the old certificate (3 days left), and that is what visitors see."""
    judge = checks.BY_METRIC["cert_expiry"].judge
    served = {"name": "shop.example.com", "source": "endpoint", "daysLeft": 3.0}
    on_disk = {"name": "shop.example.com", "source": "nginx", "daysLeft": 90.0}
    for entries in ([served, on_disk], [on_disk, served]):
        found = judge({"certificates": {"certificates": entries}}, {}, 14, {})
        assert found == {"shop.example.com": checks.Finding(3.0, True, "expires in 3 days")}


def test_the_oldest_mail_is_worded_in_its_unit_and_an_empty_queue_is_the_good_state():
    judge = checks.BY_METRIC["mail_oldest"].judge
    assert judge({}, {}, 3600, {}) == {}
    empty = judge({"mailqueue": {"mta": "postfix", "total": 0}}, {}, 1, {})
    assert empty == {"postfix": checks.Finding(0, False, "no message queued")}
    young = judge({"mailqueue": {"mta": "postfix", "total": 3, "oldestAge": 5}}, {}, 1, {})
    assert young["postfix"].bad and young["postfix"].text == "oldest message queued 5 s ago"
    old = judge({"mailqueue": {"mta": "exim", "total": 1, "oldestAge": 7300}}, {}, 3600, {})
    assert old["exim"].bad and old["exim"].text == "oldest message queued 2 h ago"


def test_service_states_rank_down_over_a_problem_of_its_own_over_up():
    services = [("mysql", False), ("phpfpm", False), ("redis", True)]
    problems = [("service_down", "redis", "not answering"),
                ("fpm_queue", "www", "3 waiting"), ("fpm_children", "www", "hit 2 times"),
                ("cert_expiry", "shop.example.com", "expires in 3 days")]
    assert checks.service_states(services, problems) == {
        "mysql": ("up", []), "redis": ("down", []),
        "phpfpm": ("problem", ["www: 3 waiting", "www: hit 2 times"]),
        # A certificate's check names its service, seen or not by service_down.
        "certificates": ("problem", ["shop.example.com: expires in 3 days"])}


def test_every_check_but_service_down_names_a_service_the_wire_has():
    from panel import protocol

    wire = set(protocol.METRICS["properties"]["services"]["properties"])
    assert {check.service for check in checks.CHECKS if check.service} <= wire
