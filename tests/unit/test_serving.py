"""Pure parts of panel/serving.py: Waitress's queue-depth warnings held to one a minute."""
import logging

from panel import serving


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def queue_record(depth):
    return logging.LogRecord("waitress.queue", logging.WARNING, __file__, 1,
                             "Task queue depth is %d", (depth,), None)


def test_a_backlog_is_one_warning_a_minute_saying_how_many_it_stands_for():
    clock = Clock()
    warnings = serving.QueueWarnings(every=60, clock=clock)
    passed = []
    for depth in range(1, 101):  # a request a tenth of a second, the threads all busy
        record = queue_record(depth)
        if warnings.filter(record):
            passed.append(record.getMessage())
        clock.now += 0.1
    assert passed == ["Task queue depth is 1"]
    clock.now += 60
    record = queue_record(7)
    assert warnings.filter(record)
    assert record.getMessage() == "Task queue depth is 7 (and 99 more since the last such warning)"
    record = queue_record(8)
    assert not warnings.filter(record)
