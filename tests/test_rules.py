from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from flux_secu.config import OpeningHours, SeasonalHoursConfig
from flux_secu.rules.calendar import SiteCalendar
from flux_secu.rules.presence import PresenceConfirmed, PresenceEnded, PresenceTracker

PARIS = ZoneInfo("Europe/Paris")
HOURS = OpeningHours.model_validate({"mon": ["08:30-12:00", "13:30-18:00"], "sat": ["09:00-17:00"]})


@pytest.fixture()
def calendar() -> SiteCalendar:
    return SiteCalendar(HOURS, frozenset({date(2026, 12, 28)}), PARIS)


@pytest.mark.parametrize(
    ("local", "is_open"),
    [
        ("2026-11-23T08:29:59", False),  # Monday, a second before opening
        ("2026-11-23T08:30:00", True),
        ("2026-11-23T11:59:59", True),
        ("2026-11-23T12:00:00", False),  # lunch break
        ("2026-11-23T13:30:00", True),
        ("2026-11-23T18:00:00", False),
        ("2026-11-23T23:00:00", False),
        ("2026-11-24T10:00:00", False),  # Tuesday: not listed, closed all day
        ("2026-11-28T10:00:00", True),  # Saturday
        ("2026-12-28T10:00:00", False),  # a Monday, but a holiday
    ],
)
def test_open_and_closed_around_opening_times(calendar: SiteCalendar, local: str, is_open: bool) -> None:
    assert calendar.is_open(datetime.fromisoformat(local).replace(tzinfo=PARIS)) is is_open


def test_calendar_uses_site_local_time_across_dst(calendar: SiteCalendar) -> None:
    # 08:45 local on the Mondays either side of the October 2026 change: UTC 06:45 then 07:45.
    summer = datetime.fromisoformat("2026-10-19T06:45:00+00:00")
    winter = datetime.fromisoformat("2026-10-26T07:45:00+00:00")
    assert calendar.is_open(summer) and calendar.is_open(winter)
    assert not calendar.is_open(datetime.fromisoformat("2026-10-26T06:45:00+00:00"))  # 07:45 local


def test_calendar_refuses_naive_instants(calendar: SiteCalendar) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        calendar.is_open(datetime(2026, 11, 23, 10, 0))


def test_seasonal_hours_replace_the_weekly_ones_on_the_days_they_contain() -> None:
    summer = SeasonalHoursConfig.model_validate(
        {"name": "été", "from": "04-01", "until": "09-30", "opening_hours": {"mon": ["08:30-18:30"]}})
    # A season across the new year: closed every day from Christmas to the 2nd of January.
    fortnight = SeasonalHoursConfig.model_validate({"from": "12-24", "until": "01-02", "opening_hours": {}})
    cal = SiteCalendar(HOURS, frozenset(), PARIS, (), (summer, fortnight))

    def is_open(local: str) -> bool:
        return cal.is_open(datetime.fromisoformat(local).replace(tzinfo=PARIS))

    assert is_open("2026-09-28T12:30:00") and is_open("2026-09-28T18:15:00")  # a summer Monday
    assert not is_open("2026-10-05T12:30:00") and not is_open("2026-10-05T18:15:00")  # winter: lunch, 18:00
    assert is_open("2026-03-30T08:30:00") and not is_open("2026-03-30T12:30:00")  # 31 March is still winter
    assert not is_open("2026-04-04T10:00:00")  # a summer Saturday: the season lists Mondays only
    assert not is_open("2026-12-28T10:00:00") and not is_open("2027-01-02T10:00:00")
    assert is_open("2027-01-04T10:00:00")  # the Monday after: the weekly hours again


def test_presence_confirmed_on_three_of_five_frames_once() -> None:
    tracker = PresenceTracker(hits=3, window=5, clear_after_s=3.0)
    seen = [False, True, False, True, False, True, True, True, True]
    changes = [tracker.observe(i * 0.2, s) for i, s in enumerate(seen)]
    confirmed = [(i, c) for i, cs in enumerate(changes) for c in cs]
    assert len(confirmed) == 1
    index, change = confirmed[0]
    assert index == 5 and isinstance(change, PresenceConfirmed)
    assert change.first_seen_ts == pytest.approx(0.2)


def test_two_hits_never_confirm() -> None:
    tracker = PresenceTracker(hits=3, window=5)
    pattern = [True, True, False, False, False] * 4
    assert all(not tracker.observe(i * 0.2, s) for i, s in enumerate(pattern))


def test_presence_ends_after_clear_time_and_a_new_one_starts() -> None:
    tracker = PresenceTracker(hits=3, window=5, clear_after_s=3.0)
    events = []
    for i in range(10):
        events += tracker.observe(i * 0.2, True)
    for i in range(10, 30):  # 4 s without a person
        events += tracker.observe(i * 0.2, False)
    for i in range(30, 35):
        events += tracker.observe(i * 0.2, True)
    kinds = [type(e) for e in events]
    assert kinds == [PresenceConfirmed, PresenceEnded, PresenceConfirmed]
    assert events[1].last_seen_ts == pytest.approx(1.8)


def test_gap_without_analysed_frames_separates_presences() -> None:
    # The motion gate may skip the empty stretch entirely: the next sighting still starts anew.
    tracker = PresenceTracker(hits=3, window=5, clear_after_s=3.0)
    first = [c for i in range(5) for c in tracker.observe(i * 0.2, True)]
    later = [c for i in range(5) for c in tracker.observe(10.0 + i * 0.2, True)]
    assert [type(c) for c in first] == [PresenceConfirmed]
    assert [type(c) for c in later] == [PresenceEnded, PresenceConfirmed]
    assert later[1].first_seen_ts == pytest.approx(10.0)


def test_short_occlusion_does_not_split_a_presence() -> None:
    tracker = PresenceTracker(hits=3, window=5, clear_after_s=3.0)
    pattern = [True] * 5 + [False] * 10 + [True] * 5  # 2 s unseen < clear_after_s
    changes = [c for i, s in enumerate(pattern) for c in tracker.observe(i * 0.2, s)]
    assert [type(c) for c in changes] == [PresenceConfirmed]
