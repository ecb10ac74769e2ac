"""A synthetic county for demos, tests and replay benchmarks: deterministic for a seed.

The county is shaped on Leicester, Leicestershire and Rutland: children in a handful of towns,
some looked after and placed into the county by other authorities, a few repeat runaways, a
handful of adults of concern with vehicles and phones who turn up with several children, and two
hotels where sightings cluster. Every name, phone number and NHS number is synthetic: phone
numbers come from Ofcom's drama ranges and NHS numbers from the 999 test range.

``simulate`` yields ``(schema name, JSON-form event)`` in event-time (``occurred_at``) order.
Reports can be recorded late (``reported_at`` hours or days later), as real ones are.
All randomness comes from one ``random.Random(seed)``; nothing reads the clock.

Event files (``write_jsonl``) hold one JSON object per line::

    {"schema": "MissingEpisodeEvent", "event": {...}}

(see ``schemas.jsonl``), so one file carries every kind and the publisher routes on ``schema``.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from schemas.catalogue import HUB_DECISION, INTELLIGENCE_REPORT, MISSING_EPISODE_EVENT
from schemas.domain import nhs_check_digit
from schemas.jsonl import format_line

Event = tuple[str, dict[str, Any]]

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_CHILDREN = 500_000

# --- the county -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    code: str
    name: str
    phone: str


@dataclass(frozen=True)
class Town:
    name: str
    lat: float
    lon: float
    outward: tuple[str, ...]
    authority: Authority
    weight: float


@dataclass(frozen=True)
class Premises:
    name: str
    kind: str
    lat: float
    lon: float
    postcode: str
    uprn: int
    town: str


@dataclass(frozen=True)
class Agency:
    name: str
    kind: str


LEICESTER = Authority("E06000016", "Leicester City Council", "0116 496 0100")
LEICESTERSHIRE = Authority("E10000018", "Leicestershire County Council", "0116 496 0200")
RUTLAND = Authority("E06000017", "Rutland County Council", "01632 960 300")

TOWNS: tuple[Town, ...] = (
    Town("Leicester", 52.6369, -1.1398, ("LE1", "LE2", "LE3", "LE4", "LE5"), LEICESTER, 0.42),
    Town("Loughborough", 52.7721, -1.2062, ("LE11",), LEICESTERSHIRE, 0.20),
    Town("Hinckley", 52.5413, -1.3734, ("LE10",), LEICESTERSHIRE, 0.09),
    Town("Coalville", 52.7225, -1.3706, ("LE67",), LEICESTERSHIRE, 0.08),
    Town("Melton Mowbray", 52.7661, -0.8867, ("LE13",), LEICESTERSHIRE, 0.07),
    Town("Market Harborough", 52.4775, -0.9207, ("LE16",), LEICESTERSHIRE, 0.07),
    Town("Oakham", 52.6705, -0.7279, ("LE15",), RUTLAND, 0.07),
)

# Authorities that place looked-after children into the county ("placed out of area").
PLACING_AUTHORITIES: tuple[str, ...] = (
    "E10000024",  # Nottinghamshire
    "E06000018",  # Nottingham
    "E08000025",  # Birmingham
    "E08000026",  # Coventry
    "E06000015",  # Derby
    "E09000022",  # Lambeth
)

_HOTEL_NAMES = ("Station Hotel", "Riverside Lodge", "Canal Side Inn", "Parkway Hotel", "Kingfisher Lodge")
_FAST_FOOD_NAMES = ("Chicken Palace", "Pizza Corner", "Burger Shack", "Kebab House", "Late Night Grill")
_PARK_NAMES = ("Victoria Park", "Memorial Gardens", "Brook Meadow", "Abbey Fields")
_OTHER_NAMES = ("Bus Station", "Shopping Centre", "Retail Park car park")

_LETTERS = "ABCDEFGHJKLMNOPRSTUVWXY"  # no I, Q or Z in a current-format VRM
_INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # postcode inward letters never use C, I, K, M, O, V
_AGE_IDS = ("15", "65", "16", "66", "17", "67", "18", "68", "19", "69", "20", "70", "21", "71", "22", "72")

# Who submits soft intelligence, by weight; police grade, partners do not.
_AGENCY_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("police", 0.32),
    ("social_care", 0.15),
    ("education", 0.12),
    ("health", 0.10),
    ("voluntary", 0.09),
    ("youth_offending", 0.06),
    ("hotel", 0.07),
    ("taxi", 0.05),
    ("licensing", 0.04),
)
_HANDLING_CONDITIONS = (
    "Not to be disclosed to the subject or family without police agreement",
    "Share with children's social care only; do not record on education systems",
    "Source protection: do not act on this alone; contact the intelligence unit first",
)
_DECIDERS = ("hub-sw-01", "hub-sw-02", "hub-sw-03", "hub-police-01", "hub-police-02", "hub-manager")

_INDICATOR_SENTENCES: dict[str, str] = {
    "repeat_missing": "Child has been missing several times recently and is vague about where they were.",
    "older_partner": "Child describes an older 'boyfriend' who collects them.",
    "unexplained_gifts_or_money": "Child has new phone and clothes they cannot explain.",
    "cars_with_unknown_adults": "Child seen getting into a car with an unknown adult.",
    "hotel_taxi_fast_food_contact": "Child seen late evening at the premises with adults not known to staff.",
    "substance_misuse": "Child appeared under the influence of alcohol or drugs.",
    "online_grooming": "Child in contact online with an adult using the handle noted.",
    "other": "Concern raised by staff about the child's associations.",
}

# Evenings and nights carry most missing episodes and sightings.
_HOUR_WEIGHTS = (2, 1, 1, 1, 0.5, 0.5, 0.5, 1, 2, 2, 2, 2, 3, 3, 3, 4, 5, 6, 7, 8, 8, 7, 5, 3)
_HOURS = tuple(range(24))
_HOUR_CUM = tuple(sum(_HOUR_WEIGHTS[: i + 1]) for i in range(24))


@dataclass
class Child:
    key: str
    nhs_number: str | None
    town: Town
    home: dict[str, Any]
    in_care: bool
    placing: str
    host: str
    runaway: bool
    adult: int | None = None
    missing_until: int = -1
    episodes: list[int] = field(default_factory=list)
    case_open: bool = False
    last_meeting: int = -(10**15)


@dataclass
class Adult:
    key: str
    vehicles: tuple[str, ...]
    phones: tuple[str, ...]
    handle: str | None
    haunts: tuple[Premises, ...]
    children: list[int] = field(default_factory=list)


class _County:
    """The people, places and agencies, drawn once from the seed."""

    def __init__(self, rng: random.Random, children: int, adults: int) -> None:
        self.rng = rng
        self.premises = self._premises()
        by_town: dict[str, list[Premises]] = {}
        for p in self.premises:
            by_town.setdefault(p.town, []).append(p)
        self.premises_by_town = by_town
        hotels = [p for p in self.premises if p.kind == "hotel"]
        # The two hotspot hotels: the first hotel in each of the two biggest towns.
        self.hotspots = (hotels[0], next(h for h in hotels if h.town == "Loughborough"))
        self.agencies = self._agencies()
        self._nhs_used: set[str] = set()
        self.children = [self._child() for _ in range(children)]
        self.adults = [self._adult(i) for i in range(adults)]
        self.associates = [_key(rng) for _ in range(max(3, children // 10))]
        self._link_children()

    def _premises(self) -> list[Premises]:
        rng = self.rng
        out: list[Premises] = []
        for town in TOWNS:
            big = town.weight >= 0.2
            kinds = (
                [("hotel", n) for n in _HOTEL_NAMES[: 3 if big else 1]]
                + [("fast_food", n) for n in _FAST_FOOD_NAMES[: 4 if big else 2]]
                + [("park", n) for n in _PARK_NAMES[: 2 if big else 1]]
                + [("taxi", "Station taxi rank"), ("other", _OTHER_NAMES[rng.randrange(3)])]
            )
            for kind, name in kinds:
                lat, lon = _jitter(rng, town.lat, town.lon, 1500.0)
                out.append(
                    Premises(
                        name=f"{name}, {town.name}",
                        kind=kind,
                        lat=lat,
                        lon=lon,
                        postcode=_postcode(rng, town),
                        uprn=rng.randrange(10_000_000_000, 100_099_999_999),
                        town=town.name,
                    )
                )
        return out

    def _agencies(self) -> dict[str, list[Agency]]:
        hotels = [Agency(p.name, "hotel") for p in self.premises if p.kind == "hotel"]
        return {
            "police": [Agency("Leicestershire Police", "police")],
            "social_care": [Agency(f"{a.name} Children's Social Care", "social_care") for a in _AUTHS],
            "education": [
                Agency("Charnwood Academy", "education"),
                Agency("City Park High School", "education"),
                Agency("Soar Valley College", "education"),
            ],
            "health": [
                Agency("University Hospitals of Leicester NHS Trust", "health"),
                Agency("Leicestershire Partnership NHS Trust school nursing", "health"),
            ],
            "voluntary": [Agency("Local Youth Outreach Project", "voluntary")],
            "youth_offending": [Agency("Leicestershire Youth Justice Service", "youth_offending")],
            "hotel": hotels,
            "taxi": [Agency("A1 Cars", "taxi"), Agency("County Private Hire", "taxi")],
            "licensing": [Agency("Charnwood Borough Council Licensing", "licensing")],
        }

    def _child(self) -> Child:
        rng = self.rng
        town = _pick_weighted(rng, TOWNS, _TOWN_CUM)
        lat, lon = _jitter(rng, town.lat, town.lon, 2500.0)
        home = {"lat": round(lat, 5), "lon": round(lon, 5), "postcode": _postcode(rng, town)}
        in_care = rng.random() < 0.35
        host = town.authority.code
        placing = host
        if in_care and rng.random() < 0.3:
            placing = PLACING_AUTHORITIES[rng.randrange(len(PLACING_AUTHORITIES))]
        return Child(
            key=_key(rng),
            nhs_number=_nhs_number(rng, self._nhs_used) if rng.random() < 0.95 else None,
            town=town,
            home=home,
            in_care=in_care,
            placing=placing,
            host=host,
            runaway=rng.random() < 0.06,
        )

    def _adult(self, index: int) -> Adult:
        rng = self.rng
        # The first two adults favour the hotspot hotels: they make the hotspots.
        haunts: list[Premises] = [self.hotspots[index % 2]] if index < 2 or rng.random() < 0.3 else []
        town = TOWNS[index % 2] if index < 2 else _pick_weighted(rng, TOWNS, _TOWN_CUM)
        local = self.premises_by_town[town.name]
        for _ in range(rng.randint(1, 3)):
            haunts.append(local[rng.randrange(len(local))])
        return Adult(
            key=_key(rng),
            vehicles=tuple(_vrm(rng) for _ in range(rng.randint(1, 2))),
            phones=tuple(f"07700 900{rng.randrange(1000):03d}" for _ in range(rng.randint(1, 2))),
            handle=f"@{rng.choice(('nightdrive', 'kingz', 'easy_money', 'vibes'))}{rng.randrange(100, 999)}"
            if rng.random() < 0.5
            else None,
            haunts=tuple(haunts),
        )

    def _link_children(self) -> None:
        rng = self.rng
        if not self.adults:
            return
        for index, child in enumerate(self.children):
            # Runaways are far more often drawn into a network than other children.
            if rng.random() < (0.6 if child.runaway else 0.12):
                adult = rng.randrange(len(self.adults))
                child.adult = adult
                self.adults[adult].children.append(index)


_AUTHS = (LEICESTER, LEICESTERSHIRE, RUTLAND)
_AUTH_BY_CODE = {a.code: a for a in _AUTHS}
_TOWN_CUM = tuple(sum(t.weight for t in TOWNS[: i + 1]) for i in range(len(TOWNS)))
_AGENCY_KINDS = tuple(k for k, _ in _AGENCY_WEIGHTS)
_AGENCY_CUM = tuple(sum(w for _, w in _AGENCY_WEIGHTS[: i + 1]) for i in range(len(_AGENCY_WEIGHTS)))


# --- small random helpers ---------------------------------------------------------------------


def _key(rng: random.Random) -> str:
    return f"pk_{rng.getrandbits(64):016x}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _pick_weighted(rng: random.Random, items: tuple[Any, ...], cum: tuple[float, ...]) -> Any:
    x = rng.random() * cum[-1]
    for item, c in zip(items, cum, strict=True):
        if x < c:
            return item
    return items[-1]


def _jitter(rng: random.Random, lat: float, lon: float, metres: float) -> tuple[float, float]:
    dlat = rng.gauss(0.0, metres) / 111_320.0
    dlon = rng.gauss(0.0, metres) / (111_320.0 * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


def _postcode(rng: random.Random, town: Town) -> str:
    outward = town.outward[rng.randrange(len(town.outward))]
    letters = _INWARD_LETTERS
    return f"{outward} {rng.randrange(10)}{letters[rng.randrange(20)]}{letters[rng.randrange(20)]}"


def _vrm(rng: random.Random) -> str:
    pick = _LETTERS
    n = len(pick)
    return (
        f"{pick[rng.randrange(n)]}{pick[rng.randrange(n)]}{_AGE_IDS[rng.randrange(len(_AGE_IDS))]} "
        f"{pick[rng.randrange(n)]}{pick[rng.randrange(n)]}{pick[rng.randrange(n)]}"
    )


def _nhs_number(rng: random.Random, used: set[str]) -> str:
    # 999 is the NHS test range: a synthetic number never belongs to a real patient.
    while True:
        stem = f"999{rng.randrange(1_000_000):06d}"
        check = nhs_check_digit(stem)
        if check is not None and stem not in used:
            used.add(stem)
            return f"{stem}{check}"


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _time_of_day(rng: random.Random) -> int:
    hour = _pick_weighted(rng, _HOURS, _HOUR_CUM)
    return int(hour * HOUR + rng.randrange(HOUR))


def _iso(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")[:-6] + "Z"


def _place(p: Premises, rng: random.Random) -> dict[str, Any]:
    # Sightings at a premises land within ~40 m of it, so a spatial cell groups them.
    lat, lon = _jitter(rng, p.lat, p.lon, 40.0)
    return {
        "lat": round(lat, 5),
        "lon": round(lon, 5),
        "postcode": p.postcode,
        "uprn": p.uprn,
        "premises_name": p.name,
        "premises_type": p.kind,
    }


def _home(child: Child) -> dict[str, Any]:
    return {**child.home, "uprn": None, "premises_name": None, "premises_type": None}


# --- the simulation ---------------------------------------------------------------------------

Action = Callable[[int], Iterator[Event]]


@dataclass(frozen=True)
class Rates:
    """Per-day rates, tuned so most children have 0-1 episodes and runaways 3+ in 90 days."""

    missing_per_child: float = 0.9 / 365
    missing_per_runaway: float = 1 / 12
    network_reports_per_adult: float = 0.08
    background_reports_per_child: float = 1 / 120
    regrade_share: float = 0.15


class _Simulation:
    def __init__(self, seed: int, start: date, days: int, children: int, adults: int, rates: Rates) -> None:
        self.rng = random.Random(seed)
        self.rates = rates
        self.start = (
            int((datetime(start.year, start.month, start.day, tzinfo=UTC) - _EPOCH).total_seconds()) * 1000
        )
        self.end = self.start + days * DAY
        self.days = days
        self.county = _County(self.rng, children, adults)
        self.runaways = [i for i, c in enumerate(self.county.children) if c.runaway]
        self.others = [i for i, c in enumerate(self.county.children) if not c.runaway]
        self.queue: list[tuple[int, int, Action]] = []
        self.seq = 0

    def schedule(self, at: int, action: Action) -> None:
        if at < self.end:
            self.seq += 1
            heapq.heappush(self.queue, (at, self.seq, action))

    def run(self) -> Iterator[Event]:
        rng = self.rng
        rates = self.rates
        county = self.county
        for day in range(self.days):
            day_start = self.start + day * DAY
            for group, rate in (
                (self.others, rates.missing_per_child),
                (self.runaways, rates.missing_per_runaway),
            ):
                for _ in range(_poisson(rng, len(group) * rate) if group else 0):
                    child = group[rng.randrange(len(group))]
                    self.schedule(day_start + _time_of_day(rng), self._missing(child))
            for _ in range(_poisson(rng, len(county.adults) * rates.network_reports_per_adult)):
                adult = rng.randrange(len(county.adults))
                self.schedule(day_start + _time_of_day(rng), self._network_report(adult))
            n_children = len(county.children)
            for _ in range(
                _poisson(rng, n_children * rates.background_reports_per_child) if n_children else 0
            ):
                self.schedule(
                    day_start + _time_of_day(rng), self._background_report(rng.randrange(n_children))
                )
            day_end = day_start + DAY
            queue = self.queue
            while queue and queue[0][0] < day_end:
                at, _, action = heapq.heappop(queue)
                yield from action(at)

    # -- missing episodes --

    def _missing(self, index: int) -> Action:
        def act(at: int) -> Iterator[Event]:
            rng = self.rng
            child = self.county.children[index]
            if child.missing_until > at:
                return  # already missing: the same child cannot go missing twice at once
            duration = int(min(14 * DAY, max(30 * MINUTE, math.exp(rng.gauss(math.log(8 * HOUR), 1.0)))))
            child.missing_until = at + duration
            episode = _uuid(rng)
            risk = _risk(rng, child.runaway)
            if child.adult is not None and rng.random() < 0.4:
                last_seen = _place(_haunt(rng, self.county.adults[child.adult]), rng)
            elif rng.random() < 0.25:
                local = self.county.premises_by_town[child.town.name]
                last_seen = _place(local[rng.randrange(len(local))], rng)
            else:
                last_seen = _home(child)
            yield (
                MISSING_EPISODE_EVENT,
                self._episode_event(
                    child,
                    episode,
                    "reported_missing",
                    at,
                    at + rng.randrange(10 * MINUTE, 3 * HOUR),
                    "Leicestershire Police",
                    "police",
                    risk_level=risk,
                    missing_from="care" if child.in_care else "home",
                    placing_authority=child.placing if child.in_care else None,
                    host_authority=child.host if child.in_care else None,
                    last_seen=last_seen,
                ),
            )
            self.schedule(at + duration, self._found(index, episode))
            self._after_missing(index, at)

        return act

    def _found(self, index: int, episode: str) -> Action:
        def act(at: int) -> Iterator[Event]:
            rng = self.rng
            child = self.county.children[index]
            found: dict[str, Any] | None = None
            roll = rng.random()
            if roll < 0.5:
                found = _home(child)
            elif roll < 0.8:
                if child.adult is not None and rng.random() < 0.5:
                    places = self.county.adults[child.adult].haunts
                else:
                    places = tuple(self.county.premises_by_town[child.town.name])
                found = _place(places[rng.randrange(len(places))], rng)
            police = rng.random() < 0.7
            yield (
                MISSING_EPISODE_EVENT,
                self._episode_event(
                    child,
                    episode,
                    "found_or_returned",
                    at,
                    at + rng.randrange(5 * MINUTE, 6 * HOUR),
                    "Leicestershire Police" if police else _social_care(child).name,
                    "police" if police else "social_care",
                    found=found,
                ),
            )
            roll = rng.random()
            # Statutory return interview within 72 hours: most on time, some late, some never.
            if roll < 0.78:
                self.schedule(at + rng.randrange(2 * HOUR, 71 * HOUR), self._interview(index, episode))
            elif roll < 0.90:
                self.schedule(at + rng.randrange(73 * HOUR, 10 * DAY), self._interview(index, episode))
            if rng.random() < 0.35:
                self.schedule(at + rng.randrange(DAY, 5 * DAY), self._risk_review(index, episode))

        return act

    def _interview(self, index: int, episode: str) -> Action:
        def act(at: int) -> Iterator[Event]:
            rng = self.rng
            child = self.county.children[index]
            agency = self.county.agencies["voluntary"][0] if rng.random() < 0.5 else _social_care(child)
            yield (
                MISSING_EPISODE_EVENT,
                self._episode_event(
                    child,
                    episode,
                    "return_interview",
                    at,
                    at + rng.randrange(HOUR, 2 * DAY),
                    agency.name,
                    agency.kind,
                    interview_outcome="completed" if rng.random() < 0.85 else "declined",
                ),
            )

        return act

    def _risk_review(self, index: int, episode: str) -> Action:
        def act(at: int) -> Iterator[Event]:
            rng = self.rng
            child = self.county.children[index]
            yield (
                MISSING_EPISODE_EVENT,
                self._episode_event(
                    child,
                    episode,
                    "risk_reviewed",
                    at,
                    at + rng.randrange(HOUR, DAY),
                    _social_care(child).name,
                    "social_care",
                    risk_level=_risk(rng, child.runaway),
                ),
            )

        return act

    def _episode_event(
        self,
        child: Child,
        episode: str,
        kind: str,
        at: int,
        reported: int,
        agency: str,
        agency_type: str,
        *,
        risk_level: str | None = None,
        missing_from: str | None = None,
        placing_authority: str | None = None,
        host_authority: str | None = None,
        last_seen: dict[str, Any] | None = None,
        found: dict[str, Any] | None = None,
        interview_outcome: str | None = None,
    ) -> dict[str, Any]:
        return {
            "event_id": _uuid(self.rng),
            "episode_id": episode,
            "kind": kind,
            "occurred_at": _iso(at),
            "reported_at": _iso(reported),
            "area": child.host,
            "agency": agency,
            "agency_type": agency_type,
            "person_key": child.key,
            "nhs_number": child.nhs_number,
            "risk_level": risk_level,
            "missing_from": missing_from,
            "placing_authority": placing_authority,
            "host_authority": host_authority,
            "last_seen": last_seen,
            "found": found,
            "interview_outcome": interview_outcome,
        }

    # -- hub decisions --

    def _after_missing(self, index: int, at: int) -> None:
        rng = self.rng
        child = self.county.children[index]
        child.episodes = [t for t in child.episodes if t > at - 90 * DAY]
        child.episodes.append(at)
        if len(child.episodes) >= 3 and at - child.last_meeting > 30 * DAY:
            child.last_meeting = at
            meeting = at + rng.randrange(2 * DAY, 6 * DAY)
            if not child.case_open:
                self.schedule(meeting - rng.randrange(HOUR, DAY), self._decision(index, "case_opened"))
            self.schedule(meeting, self._decision(index, "strategy_meeting_held"))
            self.schedule(meeting + rng.randrange(HOUR, 4 * HOUR), self._decision(index, "risk_level_set"))

    def _open_case_soon(self, index: int, at: int) -> None:
        child = self.county.children[index]
        if not child.case_open:
            child.case_open = True  # marked now so one burst of reports opens one case
            self.schedule(at + self.rng.randrange(DAY, 7 * DAY), self._decision(index, "case_opened"))

    def _decision(self, index: int, kind: str) -> Action:
        def act(at: int) -> Iterator[Event]:
            rng = self.rng
            child = self.county.children[index]
            risk: str | None = None
            if kind == "case_opened":
                child.case_open = True
                risk = _risk(rng, child.runaway)
                reason = "Referred to the CSE hub after partnership intelligence and missing episodes."
                if rng.random() < 0.4:
                    self.schedule(
                        at + rng.randrange(60 * DAY, 300 * DAY), self._decision(index, "case_closed")
                    )
            elif kind == "case_closed":
                if not child.case_open:
                    return
                child.case_open = False
                reason = "Risk reduced; no CSE concerns for three months. Closed to the tracker."
            elif kind == "strategy_meeting_held":
                reason = "Multi-agency strategy meeting after repeat missing episodes."
            else:
                risk = _risk(rng, True)
                reason = "Risk level set at strategy meeting."
            authority = _AUTH_BY_CODE[child.host]
            yield (
                HUB_DECISION,
                {
                    "event_id": _uuid(rng),
                    "occurred_at": _iso(at),
                    "reported_at": _iso(at + rng.randrange(10 * MINUTE, 2 * DAY)),
                    "kind": kind,
                    "person_key": child.key,
                    "nhs_number": child.nhs_number,
                    "risk_level": risk,
                    "reason": reason,
                    "decided_by": _DECIDERS[rng.randrange(len(_DECIDERS))],
                    "area": authority.code,
                    "owning_authority": authority.name,
                    "contact_phone": authority.phone,
                },
            )

        return act

    # -- soft intelligence --

    def _network_report(self, index: int) -> Action:
        def act(at: int) -> Iterator[Event]:
            rng = self.rng
            county = self.county
            adult = county.adults[index]
            linked = adult.children or [rng.randrange(len(county.children))] if county.children else []
            named = rng.sample(linked, min(len(linked), rng.choice((1, 1, 2, 3))))
            persons = [self._child_person(i) for i in named]
            if rng.random() < 0.85:
                persons.append({"person_key": adult.key, "role": "adult_of_concern", "nhs_number": None})
            objects: list[dict[str, Any]] = []
            indicators = ["older_partner"] if rng.random() < 0.5 else []
            if rng.random() < 0.7:
                objects.append(
                    {"kind": "vehicle", "value": adult.vehicles[rng.randrange(len(adult.vehicles))]}
                )
                indicators.append("cars_with_unknown_adults")
            if rng.random() < 0.5:
                objects.append({"kind": "phone", "value": adult.phones[rng.randrange(len(adult.phones))]})
            if adult.handle is not None and rng.random() < 0.4:
                objects.append({"kind": "online_handle", "value": adult.handle})
                indicators.append("online_grooming")
            place = _haunt(rng, adult)
            if place.kind in ("hotel", "taxi", "fast_food"):
                indicators.append("hotel_taxi_fast_food_contact")
            if rng.random() < 0.3:
                indicators.append("unexplained_gifts_or_money")
            if not indicators:
                indicators.append("other")
            area = _AUTH_BY_TOWN[place.town].code
            yield from self._report(at, area, persons, objects, [_place(place, rng)], indicators, place)
            for i in named:
                self._open_case_soon(i, at)

        return act

    def _background_report(self, index: int) -> Action:
        def act(at: int) -> Iterator[Event]:
            rng = self.rng
            child = self.county.children[index]
            persons = [self._child_person(index)]
            if rng.random() < 0.3:
                associates = self.county.associates
                persons.append(
                    {
                        "person_key": associates[rng.randrange(len(associates))],
                        "role": "associate",
                        "nhs_number": None,
                    }
                )
            indicators = rng.sample(_BACKGROUND_INDICATORS, rng.choice((1, 1, 2)))
            place: Premises | None = None
            if rng.random() < 0.6:
                local = self.county.premises_by_town[child.town.name]
                place = local[rng.randrange(len(local))]
                if place.kind == "hotel" and rng.random() < 0.5:
                    # Staff and partners notice the same hotels again and again: the hotspots.
                    place = self.county.hotspots[0 if child.town is TOWNS[0] else 1]
                location = _place(place, rng)
            else:
                location = _home(child)
            yield from self._report(at, child.host, persons, [], [location], indicators, place)

        return act

    def _child_person(self, index: int) -> dict[str, Any]:
        child = self.county.children[index]
        return {"person_key": child.key, "role": "child_at_risk", "nhs_number": child.nhs_number}

    def _report(
        self,
        at: int,
        area: str,
        persons: list[dict[str, Any]],
        objects: list[dict[str, Any]],
        locations: list[dict[str, Any]],
        indicators: list[str],
        place: Premises | None,
    ) -> Iterator[Event]:
        rng = self.rng
        kind = _pick_weighted(rng, _AGENCY_KINDS, _AGENCY_CUM)
        agencies = self.county.agencies[kind]
        agency = agencies[rng.randrange(len(agencies))]
        if kind == "hotel" and place is not None and place.kind == "hotel":
            agency = Agency(place.name, "hotel")  # the hotel reports what happened on its premises
        police = kind == "police"
        delay = rng.randrange(30 * MINUTE, DAY) if police else rng.randrange(2 * HOUR, 10 * DAY)
        where = f" at {place.name}" if place is not None else ""
        narrative = " ".join(_INDICATOR_SENTENCES[i] for i in indicators) + (
            f" Location{where}." if where else ""
        )
        event = {
            "event_id": _uuid(rng),
            "report_id": _uuid(rng),
            "occurred_at": _iso(at),
            "reported_at": _iso(at + delay),
            "area": area,
            "reporting_agency": agency.name,
            "agency_type": agency.kind,
            "persons": persons,
            "objects": objects,
            "locations": locations,
            "cse_indicators": indicators,
            "narrative": narrative,
            "grading": _grading(rng) if police else None,
        }
        yield INTELLIGENCE_REPORT, event
        if not police and rng.random() < self.rates.regrade_share:
            # Police grade a partner report later: same report, new message, graded.
            regraded = dict(event)
            regraded["event_id"] = _uuid(rng)
            regraded["reported_at"] = _iso(at + delay + rng.randrange(DAY, 10 * DAY))
            regraded["grading"] = _grading(rng)
            yield INTELLIGENCE_REPORT, regraded


_AUTH_BY_TOWN = {t.name: t.authority for t in TOWNS}
_BACKGROUND_INDICATORS = [
    "repeat_missing",
    "older_partner",
    "unexplained_gifts_or_money",
    "substance_misuse",
    "online_grooming",
    "hotel_taxi_fast_food_contact",
    "other",
]


def _haunt(rng: random.Random, adult: Adult) -> Premises:
    # An adult who uses a hotspot hotel uses it for half of what is seen of him.
    if adult.haunts[0].kind == "hotel" and rng.random() < 0.5:
        return adult.haunts[0]
    return adult.haunts[rng.randrange(len(adult.haunts))]


def _risk(rng: random.Random, runaway: bool) -> str:
    x = rng.random()
    if runaway:
        return "high" if x < 0.35 else "medium" if x < 0.85 else "low"
    return "high" if x < 0.08 else "medium" if x < 0.45 else "low"


def _grading(rng: random.Random) -> dict[str, Any]:
    x = rng.random()
    source = "A" if x < 0.3 else "B" if x < 0.85 else "C"
    assessment = _pick_weighted(rng, (1, 2, 3, 4, 5), (0.1, 0.4, 0.8, 0.95, 1.0))
    conditional = rng.random() < 0.2
    return {
        "source_evaluation": source,
        "intelligence_assessment": assessment,
        "handling_code": "C" if conditional else "P",
        "handling_conditions": _HANDLING_CONDITIONS[rng.randrange(len(_HANDLING_CONDITIONS))]
        if conditional
        else None,
    }


def _social_care(child: Child) -> Agency:
    return Agency(f"{_AUTH_BY_CODE[child.host].name} Children's Social Care", "social_care")


def simulate(
    seed: int,
    start: date,
    days: int,
    children: int = 300,
    adults: int | None = None,
    duplicates: float = 0.0,
    rates: Rates | None = None,
) -> Iterator[Event]:
    """Yield ``(schema name, JSON-form event)`` for a synthetic county, in event-time order.

    ``children`` scales the county (a few hundred is one county hub's caseload; about 75,000
    children over 365 days gives a million events). ``adults`` defaults to one adult of concern
    per 40 children (at least 4). ``duplicates`` is the share of events delivered twice (same
    event_id, straight after), to exercise de-duplication downstream.
    """
    if days < 0 or children < 0:
        raise ValueError(f"days and children must not be negative, got days={days}, children={children}")
    if children > MAX_CHILDREN:
        raise ValueError(f"at most {MAX_CHILDREN} children (the NHS test range runs out), got {children}")
    if not 0.0 <= duplicates <= 1.0:
        raise ValueError(f"duplicates is a share between 0 and 1, got {duplicates}")
    n_adults = max(4, children // 40) if adults is None else adults
    simulation = _Simulation(seed, start, days, children, n_adults, rates or Rates())
    if duplicates <= 0.0:
        yield from simulation.run()
        return
    rng = random.Random(seed ^ 0x5EED)
    for event in simulation.run():
        yield event
        if rng.random() < duplicates:
            yield event


def write_jsonl(events: Iterable[Event], out: TextIO | str | Path) -> int:
    """Write events one per line as ``{"schema": ..., "event": ...}``; returns how many."""
    if isinstance(out, (str, Path)):
        with open(out, "w", encoding="utf-8") as handle:
            return write_jsonl(events, handle)
    count = 0
    write = out.write
    for name, event in events:
        write(format_line(name, event))
        write("\n")
        count += 1
    return count
