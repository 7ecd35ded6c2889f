"""Site calendar: is the site open at a given instant, in the site's own timezone?"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from flux_secu.config import Config, OpeningHours, SeasonalHoursConfig, SiteConfig, TimeRange


@dataclass(frozen=True)
class SiteCalendar:
    """Weekly opening hours and holidays (closed all day), evaluated in ``timezone``.

    Instants are timezone-aware datetimes; converting them to the site's zone first is what makes
    daylight-saving changes come out right (opening at 08:30 local stays 08:30 local).
    """

    opening_hours: OpeningHours
    holidays: frozenset[date]
    timezone: ZoneInfo
    closures: tuple[tuple[datetime, datetime], ...] = ()
    """Exceptional closures (strike, works, weather), each from start to end."""
    seasons: tuple[SeasonalHoursConfig, ...] = ()
    """Hours that replace ``opening_hours`` on the days of the year they contain (the first that does)."""

    def hours_on(self, day: date) -> list[TimeRange]:
        """The opening ranges of a local date: its season's, else the weekly ``opening_hours``."""
        hours = next((s.opening_hours for s in self.seasons if s.contains(day)), self.opening_hours)
        return hours.for_weekday(day.weekday())

    def is_open(self, at: datetime) -> bool:
        if at.tzinfo is None:
            raise ValueError("the calendar needs a timezone-aware instant")
        local = at.astimezone(self.timezone)
        if local.date() in self.holidays:
            return False
        if any(start <= at < end for start, end in self.closures):
            return False
        now = local.time().replace(tzinfo=None)
        return any(r.start <= now < r.end for r in self.hours_on(local.date()))

    def is_closed(self, at: datetime) -> bool:
        return not self.is_open(at)


def site_calendar(config: Config, site: SiteConfig) -> SiteCalendar:
    """The calendar of a configured site; closures without an offset are in the site's timezone."""
    tz = config.site_timezone(site)

    def aware(value: datetime) -> datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=tz)

    closures = tuple((aware(c.start), aware(c.end)) for c in site.closures)
    return SiteCalendar(site.opening_hours, frozenset(site.holidays), tz, closures,
                        tuple(site.seasonal_hours))


@dataclass(frozen=True, slots=True)
class Override:
    """A manual arm/disarm of a site by an operator, until ``until`` (epoch s): a late delivery..."""

    armed: bool
    until: float
    by: str = ""


def is_armed(calendar: SiteCalendar, at: datetime, override: Override | None) -> bool:
    """The intrusion rules apply when the site is closed, unless an unexpired override says otherwise."""
    if override is not None and at.timestamp() < override.until:
        return override.armed
    return calendar.is_closed(at)
