"""How the server page names and lays out a service's fields: people read labels, the wire key
(what docs/protocol.md documents) rides along in the title."""
from panel import server_page


def test_wire_keys_read_as_labels():
    assert [server_page.field_label(key) for key in (
        "queriesPerSec", "connectionsPercent", "bufferPoolHitPercent", "daysLeft",
        "maxConnections", "up", "Percent")] == [
        "queries/s", "connections %", "buffer pool hit %", "days left", "max connections",
        "up", "percent"]


def test_a_service_view_keeps_each_key_beside_its_label_and_its_lists_as_tables():
    view = server_page._service_view("phpfpm", {
        "pools": [{"name": "www", "listenQueue": 3}, {"name": "shop", "acceptedPerSec": 2.5}],
        "omitted": 0})
    assert view["figures"] == [("omitted", "omitted", "0")]
    [(label, columns, rows)] = view["lists"]
    assert label == "pools"
    assert columns == [("name", "name"), ("listenQueue", "listen queue"),
                       ("acceptedPerSec", "accepted/s")]
    assert rows == [["www", "3", ""], ["shop", "", "2.5/s"]]
