"""Time expressions in a query, resolved against ``now`` into periods a recall prefers.

``recall(query="what did we decide last week?", now=...)`` prefers memories created in the
week before ``now``'s week. The preference is soft: a memory inside a period gains up to
``TIME_PREFERENCE_WEIGHT`` (hybrid search only), one outside gains less the farther it is
(half as much at one period's length away, see :func:`closeness`), and nothing is ever dropped.
The words of a recognised expression are taken out of the keyword query, since "last week"
says when, not what.

The expressions, case-insensitive, in English, with calendar weeks starting on Monday and the
northern hemisphere's seasons (spring March-May, summer June-August, autumn or fall
September-November, winter December-February):

==========================================  ===============================================
``today``, ``tonight``, ``this morning``    today
``yesterday``, ``last night``               the day before ``now``
``the day before yesterday``                two days before
``N days|weeks|months|years ago``           that day; the 7 days around that time; that
                                            calendar month; that calendar year (``N`` in
                                            digits or words: a, an, one ... twelve, a couple
                                            of, a few, several)
``last|past N days|weeks|months|years``     from then until ``now``
``this|last|past|previous week|month|year`` the calendar week, month or year (``last``: the
                                            one before ``now``'s)
``this|last weekend``, ``the weekend``      Saturday and Sunday (``last``: before ``now``)
``on|last Monday`` ...                      the latest such day before today
``this|last summer`` ...                    ``this``: the season of ``now``'s year;
                                            ``last``: the latest one that has ended
``in [the] summer [of] 2023``               that season; without a year, the latest one
                                            that has begun
``[in|last] May [2023]``                    that month; without a year the latest May that
                                            has begun (``last``: that has ended)
``in|during 2023``                          the year
``8 May [2023]``, ``May 8[th][, 2023]``,    that day; without a year, the latest one not
``2023-05-08``                              after ``now``
==========================================  ===============================================
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

__all__ = ["Period", "closeness", "find_periods"]

MONTHS = {
    name.lower(): index
    for index in range(1, 13)
    for name in (calendar.month_name[index], calendar.month_abbr[index])
}
MONTHS["sept"] = 9
WEEKDAYS = {name.lower(): index for index, name in enumerate(calendar.day_name)}
SEASONS = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}
NUMBERS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "a couple of": 2,
    "a few": 3,
    "several": 3,
}

_MONTH = "|".join(sorted(MONTHS, key=len, reverse=True))
_WEEKDAY = "|".join(WEEKDAYS)
_SEASON = "|".join(SEASONS)
_NUMBER = r"\d{1,3}|" + "|".join(sorted(NUMBERS, key=len, reverse=True))
_UNIT = r"(?P<unit>day|week|month|year)s?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"

#: (pattern, name) in order of precedence; a span matched once is not matched again.
_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"(?P<y>\d{4})-(?P<m>\d\d)-(?P<d>\d\d)", "iso"),
    (r"the day before yesterday", "before_yesterday"),
    (rf"(?P<n>{_NUMBER})\s+{_UNIT}\s+ago", "ago"),
    (rf"(?:last|past)\s+(?P<n>{_NUMBER})\s+{_UNIT}", "last_n"),
    (
        rf"(?:on\s+)?(?:the\s+)?(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<mon>{_MONTH})\.?"
        rf"(?:,?\s+{_YEAR})?",
        "day_month",
    ),
    (
        rf"(?:on\s+)?(?P<mon>{_MONTH})\.?\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+{_YEAR})?",
        "month_day",
    ),
    (rf"(?P<which>this|last|past|previous)\s+(?P<season>{_SEASON})", "which_season"),
    (rf"(?:in\s+|during\s+)?(?:the\s+)?(?P<season>{_SEASON})\s+(?:of\s+)?{_YEAR}", "season_year"),
    (rf"(?:in|during)\s+the\s+(?P<season>{_SEASON})", "season"),
    (rf"(?P<which>this|last|past|previous)\s+(?P<mon>{_MONTH})", "which_month"),
    (rf"(?:in\s+|during\s+)?(?P<mon>{_MONTH})\.?,?\s+{_YEAR}", "month_year"),
    (rf"(?:in|during)\s+(?P<mon>{_MONTH})", "month"),
    (rf"(?:in|during)\s+{_YEAR}", "year"),
    (r"(?P<which>this|last|past|previous)\s+(?P<unit>week|month|year)", "which_unit"),
    (r"(?:(?P<which>this|last|past|previous)|the)\s+weekend", "weekend"),
    (rf"(?:on|last)\s+(?P<wd>{_WEEKDAY})", "weekday"),
    (r"yesterday|last\s+night", "yesterday"),
    (r"today|tonight|this\s+(?:morning|afternoon|evening)", "today"),
)
_COMPILED = tuple(
    (re.compile(rf"\b{pattern}\b", re.IGNORECASE), name) for pattern, name in _PATTERNS
)


@dataclass(frozen=True)
class Period:
    """``start`` <= time < ``end`` (UTC), and the words of the query that named it."""

    start: datetime
    end: datetime
    text: str


def _day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _month_start(year: int, month: int) -> datetime:
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    return datetime(year, month, 1, tzinfo=timezone.utc)


def _months(year: int, month: int, count: int) -> tuple[datetime, datetime]:
    return _month_start(year, month), _month_start(year, month + count)


def _number(text: str) -> int:
    text = " ".join(text.lower().split())
    return int(text) if text.isdigit() else NUMBERS[text]


def _latest(
    periods: Sequence[tuple[datetime, datetime]], now: datetime, *, ended: bool
) -> tuple[datetime, datetime]:
    """The latest of ``periods`` that has begun (or, with ``ended``, ended) by ``now``."""
    usable = [p for p in periods if (p[1] <= now if ended else p[0] <= now)]
    return max(usable) if usable else min(periods)


def _resolve(name: str, g: dict[str, str | None], now: datetime) -> tuple[datetime, datetime]:
    today = _day(now)
    year = int(g["year"] or 0) if g.get("year") else None
    if name == "iso":
        start = datetime(int(g["y"] or 0), int(g["m"] or 0), int(g["d"] or 0), tzinfo=timezone.utc)
        return start, start + timedelta(days=1)
    if name == "today":
        return today, today + timedelta(days=1)
    if name == "yesterday":
        return today - timedelta(days=1), today
    if name == "before_yesterday":
        return today - timedelta(days=2), today - timedelta(days=1)
    if name in ("ago", "last_n"):
        n = _number(g["n"] or "1")
        unit = (g["unit"] or "day").lower()
        if name == "last_n":
            if unit in ("day", "week"):
                return now - timedelta(days=n * (7 if unit == "week" else 1)), now
            months = n * (12 if unit == "year" else 1)
            return _month_start(now.year, now.month - months).replace(day=min(now.day, 28)), now
        if unit == "day":
            return today - timedelta(days=n), today - timedelta(days=n - 1)
        if unit == "week":
            middle = now - timedelta(weeks=n)
            return middle - timedelta(days=3.5), middle + timedelta(days=3.5)
        if unit == "month":
            return _months(now.year, now.month - n, 1)
        return _months(now.year - n, 1, 12)
    if name == "which_unit":
        back = (g["which"] or "this").lower() != "this"
        unit = (g["unit"] or "week").lower()
        if unit == "week":
            start = today - timedelta(days=today.weekday() + (7 if back else 0))
            return start, start + timedelta(days=7)
        if unit == "month":
            return _months(now.year, now.month - (1 if back else 0), 1)
        return _months(now.year - (1 if back else 0), 1, 12)
    if name == "weekend":
        saturday = today - timedelta(days=(today.weekday() - 5) % 7)  # the latest begun
        if (g.get("which") or "").lower() in ("last", "past", "previous") and today.weekday() >= 5:
            saturday -= timedelta(days=7)
        return saturday, saturday + timedelta(days=2)
    if name == "weekday":
        weekday = WEEKDAYS[(g["wd"] or "").lower()]
        days_back = (today.weekday() - weekday) % 7 or 7
        start = today - timedelta(days=days_back)
        return start, start + timedelta(days=1)
    if name in ("which_season", "season_year", "season"):
        first = SEASONS[(g["season"] or "").lower()]
        if year is not None:
            return _months(year, first, 3)
        which = (g.get("which") or "").lower()
        options = [_months(y, first, 3) for y in (now.year - 2, now.year - 1, now.year)]
        if which == "this":
            return _months(now.year - (1 if first == 12 and now.month < 3 else 0), first, 3)
        return _latest(options, now, ended=which in ("last", "past", "previous"))
    if name in ("which_month", "month_year", "month"):
        month = MONTHS[(g["mon"] or "").lower().rstrip(".")]
        if year is not None:
            return _months(year, month, 1)
        which = (g.get("which") or "").lower()
        if which == "this":
            return _months(now.year, month, 1)
        options = [_months(y, month, 1) for y in (now.year - 1, now.year)]
        return _latest(options, now, ended=which in ("last", "past", "previous"))
    if name == "year":
        return _months(year or now.year, 1, 12)
    # day_month, month_day
    month = MONTHS[(g["mon"] or "").lower().rstrip(".")]
    day = int(g["d"] or 1)
    candidates = []
    for y in [year] if year is not None else [now.year - 1, now.year]:
        try:
            start = datetime(y, month, day, tzinfo=timezone.utc)
        except ValueError:
            continue
        candidates.append((start, start + timedelta(days=1)))
    if not candidates:
        raise ValueError("no such day")
    return _latest(candidates, now, ended=False)


def find_periods(query: str, now: datetime) -> list[Period]:
    """The periods the query's time expressions name, in the order they appear."""
    taken: list[tuple[int, int, Period]] = []
    for pattern, name in _COMPILED:
        for match in pattern.finditer(query):
            begin, finish = match.span()
            if any(begin < end and start < finish for start, end, _ in taken):
                continue
            try:
                start, end = _resolve(name, match.groupdict(), now)
            except (ValueError, OverflowError, KeyError):  # a day that does not exist
                continue
            taken.append((begin, finish, Period(start, end, match.group(0))))
    return [period for _, _, period in sorted(taken, key=lambda t: t[0])]


def closeness(moment: datetime, periods: Sequence[Period]) -> float:
    """1 inside a period; outside, halved for every period's length of distance; the best."""
    best = 0.0
    for period in periods:
        if period.start <= moment < period.end:
            return 1.0
        length = (period.end - period.start).total_seconds()
        if moment < period.start:
            distance = (period.start - moment).total_seconds()
        else:
            distance = (moment - period.end).total_seconds()
        best = max(best, 0.5 ** (distance / length) if length > 0 else 0.0)
    return best


def strip_periods(query: str, periods: Sequence[Period]) -> str:
    """The query without the words of its time expressions."""
    for period in periods:
        query = query.replace(period.text, " ")
    return query
