"""Pure rules logic: zones, masks, policies, tracking, closures and manual overrides."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from flux_secu.config import CameraConfig, OpeningHours
from flux_secu.detect.classes import COCO80
from flux_secu.detect.detections import Detections
from flux_secu.rules.calendar import Override, SiteCalendar, is_armed
from flux_secu.rules.policy import CameraPolicy
from flux_secu.rules.tracking import IouTracker
from flux_secu.rules.zones import Polygon, zone_index

PARIS = ZoneInfo("Europe/Paris")
GROUPS = {"person": ["person"], "vehicle": ["bicycle", "car", "motorcycle", "bus", "truck"]}


def dets(*rows: tuple[float, float, float, float, str, float]) -> Detections:
    return Detections(
        np.array([r[:4] for r in rows], np.float32).reshape(-1, 4),
        np.array([r[5] for r in rows], np.float32),
        np.array([COCO80.index(r[4]) for r in rows], np.int32),
    )


def test_polygon_contains_and_anchor_is_the_bottom_centre() -> None:
    triangle = Polygon(((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)))
    inside = triangle.contains(np.array([0.2, 0.8, 0.5]), np.array([0.2, 0.8, 0.49]))
    assert list(inside) == [True, False, True]
    left_half = Polygon(((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)))
    # A box whose head is in the left half but whose feet are in the right half is not "in" it.
    boxes = np.array([[10, 10, 40, 90], [45, 10, 95, 90]], np.float32)
    assert list(zone_index(boxes, 100, 100, [left_half])) == [0, -1]


def camera(**kw: object) -> CameraConfig:
    return CameraConfig.model_validate({"id": "c", "source": "rtsp://x", **kw})


def test_default_policy_person_intrusion_vehicle_event_only_when_armed() -> None:
    policy = CameraPolicy(camera(), GROUPS, list(COCO80))
    frame = dets((10, 10, 30, 80, "person", 0.9), (40, 40, 90, 90, "truck", 0.8),
                 (0, 0, 5, 5, "dog", 0.9))
    armed = {(d.group, d.action) for d in policy.evaluate(frame, 100, 100, armed=True)}
    assert armed == {("person", "intrusion"), ("vehicle", "event")}  # the dog is in no group
    assert policy.evaluate(frame, 100, 100, armed=False) == []  # open: customers and their cars
    assert policy.acts == {True: True, False: False}  # open, nothing to do: its camera can rest


def test_a_zone_closed_to_visitors_or_watching_vehicles_keeps_its_camera_looking() -> None:
    cfg = camera(zones=[
        {"id": "cour", "polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]},
        {"id": "local-technique", "polygon": [[0.5, 0], [1, 0], [1, 1], [0.5, 1]],
         "open": {"person": "intrusion"}},
    ])
    assert CameraPolicy(cfg, GROUPS, list(COCO80)).acts == {True: True, False: True}
    parking = camera(zones=[{"id": "p", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]],
                             "closed": {"vehicle": "event"}}])
    assert CameraPolicy(parking, GROUPS, list(COCO80)).acts == {True: True, False: False}  # events at night


def test_zones_masks_sizes_and_per_zone_policies() -> None:
    cfg = camera(
        zones=[
            {"id": "quai", "polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]],
             "closed": {"person": "intrusion", "vehicle": "intrusion"}, "min_dwell_s": 2, "min_height": 0.2},
            {"id": "parking", "polygon": [[0.5, 0], [1, 0], [1, 1], [0.5, 1]],
             "closed": {"vehicle": "event"}},
        ],
        ignore=[[[0.0, 0.9], [1.0, 0.9], [1.0, 1.0], [0.0, 1.0]]],  # the road along the bottom
    )
    policy = CameraPolicy(cfg, GROUPS, list(COCO80))
    frame = dets(
        (10, 10, 30, 80, "person", 0.9),   # quai: intrusion
        (10, 70, 14, 80, "person", 0.9),   # quai but 10 % of the height: too small
        (60, 10, 80, 80, "person", 0.9),   # parking: persons not covered there -> ignored
        (60, 10, 90, 80, "car", 0.9),      # parking: event
        (20, 10, 40, 95, "car", 0.9),      # on the road mask
        (10, 10, 40, 60, "truck", 0.9),    # quai: a vehicle there at night is an intrusion
    )
    decisions = {d.index: (d.zone, d.action, d.min_dwell_s) for d in policy.evaluate(frame, 100, 100, True)}
    assert decisions == {0: ("quai", "intrusion", 2), 3: ("parking", "event", 0), 5: ("quai", "intrusion", 2)}


def test_tracker_keeps_ids_separates_groups_and_spots_parked_objects() -> None:
    tracker = IouTracker(max_age_s=2.0)
    person = np.array([[10, 10, 30, 80]], np.float32)
    car = np.array([[50, 50, 90, 80]], np.float32)
    ids = [tracker.update(t * 0.2, np.concatenate([person + t * 2, car]), np.array([0, 1], np.int32))
           for t in range(40)]
    assert len({int(i[0]) for i in ids}) == 1 and len({int(i[1]) for i in ids}) == 1
    walker, parked = tracker.get(int(ids[-1][0])), tracker.get(int(ids[-1][1]))
    assert walker is not None and walker.moved
    assert parked is not None and parked.stationary(5.0)
    # Unseen for longer than max_age: a new object, a new id.
    later = tracker.update(20.0, person, np.array([0], np.int32))
    assert int(later[0]) not in {int(ids[0][0]), int(ids[0][1])}


def test_closures_and_overrides() -> None:
    hours = OpeningHours.model_validate({"wed": ["08:30-18:00"]})
    strike = (datetime(2026, 11, 25, 12, 0, tzinfo=PARIS), datetime(2026, 11, 25, 14, 0, tzinfo=PARIS))
    calendar = SiteCalendar(hours, frozenset({date(2026, 12, 30)}), PARIS, (strike,))
    at = datetime(2026, 11, 25, 13, 0, tzinfo=PARIS)
    assert not calendar.is_open(at) and calendar.is_open(datetime(2026, 11, 25, 15, 0, tzinfo=PARIS))
    night = datetime(2026, 11, 25, 23, 0, tzinfo=PARIS)
    assert is_armed(calendar, night, None)
    late_delivery = Override(armed=False, until=night.timestamp() + 1800, by="chef de site")
    assert not is_armed(calendar, night, late_delivery)
    assert is_armed(calendar, datetime(2026, 11, 25, 23, 31, tzinfo=PARIS), late_delivery)  # expired
    day = datetime(2026, 11, 25, 10, 0, tzinfo=PARIS)
    assert not is_armed(calendar, day, None)
    assert is_armed(calendar, day, Override(armed=True, until=day.timestamp() + 60))


@pytest.mark.parametrize("bad", [
    {"zones": [{"id": "z", "polygon": [[0, 0], [1, 0]]}]},  # two points
    {"zones": [{"id": "z", "polygon": [[0, 0], [1.5, 0], [1, 1]]}]},  # not normalised
    {"zones": [{"id": "z", "polygon": [[0, 0], [1, 0], [1, 1]], "closed": {"person": "shout"}}]},
])
def test_bad_zones_are_refused(bad: dict[str, object]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        camera(**bad)
