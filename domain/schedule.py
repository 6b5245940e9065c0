"""A Schedule: a workflow run at given times, each firing a new session of it.

The schedule decides, from its own state and the time now, which firings are due
(`firings_due`); a firing is recorded (`fire`) in the same transaction as the session it
creates, whose id is derived from the schedule and the firing time, so a firing happens once
whoever tries it and however often. A firing missed while nothing ran follows `catch_up`:
`none` lets it go, `one` fires once for all of them, `all` fires each.

Times are recorded as ISO 8601 strings in UTC; `cursor` is the time up to which every firing
has been dealt with (fired, refused or let go).
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidStateTransition, InvalidWorkflow
from domain.payloads import ErrorPayload
from domain.session import MAX_NAME, check_tenant

CatchUp = Literal["none", "one", "all"]
CATCH_UPS: tuple[CatchUp, ...] = ("none", "one", "all")
EVERY = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
MAX_EVERY_S = 366 * 86_400


def at_text(moment: datetime) -> str:
    """A moment as recorded: ISO 8601 in UTC, to the microsecond."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def moment_of(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True)
class Timing:
    """When a schedule fires: a cron expression in a time zone, or every so many seconds
    (on a grid counted from the Unix epoch, so `every: 30s` fires at :00 and :30)."""

    cron: str | None = None
    every: str | None = None
    timezone: str = "UTC"

    @classmethod
    def of(cls, cron: str | None, every: str | None, timezone: str | None) -> Timing:
        """A timing, checked: exactly one of `cron` and `every`, a zone that exists."""
        if (cron is None) == (every is None):
            raise InvalidWorkflow(
                "a schedule needs exactly one of cron and every",
                suggested_action='Give "cron": "*/5 * * * *" or "every": "30s", not both',
                field="cron",
            )
        timing = cls(cron.strip() if cron else None, every, timezone or "UTC")
        timing.check()
        return timing

    def check(self) -> None:
        self._zone()
        if self.every is not None:
            self.every_s()
        elif self.cron is not None and not _valid_cron(self.cron):
            raise InvalidWorkflow(
                f"{self.cron!r} is not a cron expression",
                suggested_action='Write five fields: minute hour day month weekday, e.g. "0 9 * '
                '* 1-5"; or @hourly, @daily, @weekly, @monthly',
                field="cron",
            )

    def every_s(self) -> int:
        match = EVERY.match(self.every or "")
        seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)] if match else 0
        if not 1 <= seconds <= MAX_EVERY_S:
            raise InvalidWorkflow(
                f"every {self.every!r} is not a period of 1 s to 366 d",
                suggested_action='Write a number and a unit: "30s", "5m", "2h", "1d"',
                field="every",
            )
        return seconds

    def _zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidWorkflow(
                f"no time zone {self.timezone!r}",
                suggested_action="Name an IANA time zone: UTC, Europe/Paris, America/New_York",
                field="timezone",
            ) from None

    def next_after(self, moment: datetime) -> datetime:
        """The first firing strictly after `moment`."""
        if self.every is not None:
            period = self.every_s()
            return _from_epoch((math.floor(moment.timestamp() / period) + 1) * period)
        local = moment.astimezone(self._zone())
        found: datetime = croniter(self.cron or "", local).get_next(datetime)
        return found.astimezone(UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last firing at or before `moment`."""
        if self.every is not None:
            period = self.every_s()
            return _from_epoch(math.floor(moment.timestamp() / period) * period)
        local = (moment + timedelta(microseconds=1)).astimezone(self._zone())
        found: datetime = croniter(self.cron or "", local).get_prev(datetime)
        return found.astimezone(UTC)

    def to_dict(self) -> dict[str, Any]:
        return {"cron": self.cron, "every": self.every, "timezone": self.timezone}


def _valid_cron(expression: str) -> bool:
    if expression.startswith("@"):
        return expression in ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly")
    return len(expression.split()) == 5 and croniter.is_valid(expression)


def _from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True)
class FiringsDue:
    """What a schedule should do now: fire at these times (oldest first), after letting go
    of every firing up to `let_go_through`."""

    fire: list[datetime] = field(default_factory=list)
    let_go_through: datetime | None = None


def firing_session_id(schedule_id: uuid.UUID, fired_at: datetime) -> uuid.UUID:
    """The id of the session a firing creates: the same for the same firing, always."""
    return uuid.uuid5(schedule_id, at_text(fired_at))


def check_catch_up(value: str) -> CatchUp:
    for known in CATCH_UPS:
        if value == known:
            return known
    raise InvalidWorkflow(
        f"catch_up {value!r} is not one of none, one, all",
        suggested_action="Set catch_up to none, one (the default) or all",
        field="catch_up",
    )


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or "\x00" in name:
        raise InvalidWorkflow(
            f"a schedule's name must be 1 to {MAX_NAME} characters",
            suggested_action=f"Name the schedule in 1 to {MAX_NAME} characters",
            field="name",
        )
    return name


CHANGEABLE = ("name", "workflow", "timing", "catch_up", "webhook")


class Schedule(Aggregate):
    class Event(Aggregate.Event):
        class_version = 1

    class Created(Event, Aggregate.Created):
        tenant: str
        name: str
        workflow: dict[str, Any]
        timing: dict[str, Any]
        catch_up: str
        paused: bool
        webhook: dict[str, Any] | None
        starts_at: str
        actor: str

    class Changed(Event):
        """`changes` holds the new value of each field changed (of `CHANGEABLE`); a new
        timing counts from `at`."""

        changes: dict[str, Any]
        at: str
        actor: str

    class Paused(Event):
        actor: str

    class Resumed(Event):
        """Firings count from `at`: none missed while paused is caught up."""

        at: str
        actor: str

    class Fired(Event):
        fired_at: str
        session_id: str
        actor: str

    class FiringRefused(Event):
        """The firing's session was not admitted (the tenant's policy, a missing secret)."""

        fired_at: str
        error: ErrorPayload
        actor: str

    class FiringsLetGo(Event):
        """Firings missed while nothing ran, up to `through`, let go (`catch_up: none`)."""

        through: str
        actor: str

    class Deleted(Event):
        actor: str

    tenant: str
    name: str
    workflow: dict[str, Any]
    timing: Timing
    catch_up: CatchUp
    paused: bool
    deleted: bool
    webhook: dict[str, Any] | None
    created_by: str
    cursor: datetime
    last_fired_at: datetime | None
    last_session_id: uuid.UUID | None
    firings: int

    @classmethod
    def create(
        cls,
        *,
        tenant: str,
        name: str,
        workflow: dict[str, Any],
        timing: Timing,
        now: datetime,
        actor: str,
        catch_up: str = "one",
        paused: bool = False,
        webhook: dict[str, Any] | None = None,
    ) -> Schedule:
        """A schedule whose first firing is the first one after `now`."""
        check_tenant(tenant)
        timing.check()
        return cls(
            tenant=tenant,
            name=check_name(name),
            workflow=workflow,
            timing=timing.to_dict(),
            catch_up=check_catch_up(catch_up),
            paused=paused,
            webhook=webhook,
            starts_at=at_text(now),
            actor=actor,
        )

    @event(Created)
    def __init__(
        self,
        *,
        tenant: str,
        name: str,
        workflow: dict[str, Any],
        timing: dict[str, Any],
        catch_up: str,
        paused: bool,
        webhook: dict[str, Any] | None,
        starts_at: str,
        actor: str,
    ) -> None:
        self.tenant = tenant
        self.name = name
        self.workflow = workflow
        self.timing = Timing(**timing)
        self.catch_up = check_catch_up(catch_up)
        self.paused = paused
        self.deleted = False
        self.webhook = webhook
        self.created_by = actor
        self.cursor = moment_of(starts_at)
        self.last_fired_at = None
        self.last_session_id = None
        self.firings = 0

    # ---- derived -----------------------------------------------------------------------

    @property
    def next_firing(self) -> datetime | None:
        """When it fires next (None while paused or deleted)."""
        if self.paused or self.deleted:
            return None
        return self.timing.next_after(self.cursor)

    def firings_due(self, now: datetime, grace: timedelta, limit: int) -> FiringsDue:
        """The firings due at `now`: with `catch_up: all` each missed one (at most `limit`
        at a time); with `one` the latest; with `none` the latest only if it is no more than
        `grace` late, else every one is let go."""
        first = self.next_firing
        if first is None or first > now:
            return FiringsDue()
        if self.catch_up == "all":
            times: list[datetime] = []
            while first <= now and len(times) < limit:
                times.append(first)
                first = self.timing.next_after(first)
            return FiringsDue(fire=times)
        latest = self.timing.latest_at_or_before(now)
        if self.catch_up == "none" and now - latest > grace:
            return FiringsDue(let_go_through=latest)
        return FiringsDue(fire=[latest])

    # ---- commands ----------------------------------------------------------------------

    def _require_live(self, action: str) -> None:
        if self.deleted:
            raise InvalidStateTransition(f"cannot {action}: the schedule is deleted")

    def change(self, changes: dict[str, Any], now: datetime, actor: str) -> None:
        """Change any of `CHANGEABLE` (a timing given as a `Timing`'s dict)."""
        self._require_live("change it")
        unknown = sorted(set(changes) - set(CHANGEABLE))
        if unknown:
            raise InvalidWorkflow(f"a schedule has no field {', '.join(unknown)}", field=unknown[0])
        if "name" in changes:
            changes = {**changes, "name": check_name(changes["name"])}
        if "catch_up" in changes:
            check_catch_up(changes["catch_up"])
        if "timing" in changes:
            Timing(**changes["timing"]).check()
        if changes:
            self._changed(changes=changes, at=at_text(now), actor=actor)

    def pause(self, actor: str) -> None:
        self._require_live("pause it")
        if not self.paused:
            self._paused(actor=actor)

    def resume(self, now: datetime, actor: str) -> None:
        self._require_live("resume it")
        if self.paused:
            self._resumed(at=at_text(now), actor=actor)

    def fire(self, fired_at: datetime, session_id: uuid.UUID, actor: str) -> None:
        self._require_firing(fired_at)
        self._fired(fired_at=at_text(fired_at), session_id=str(session_id), actor=actor)

    def refuse_firing(self, fired_at: datetime, error: ErrorPayload, actor: str) -> None:
        self._require_firing(fired_at)
        self._firing_refused(fired_at=at_text(fired_at), error=error, actor=actor)

    def let_go(self, through: datetime, actor: str) -> None:
        self._require_firing(through)
        self._firings_let_go(through=at_text(through), actor=actor)

    def delete(self, actor: str) -> None:
        self._require_live("delete it")
        self._deleted(actor=actor)

    def _require_firing(self, moment: datetime) -> None:
        self._require_live("fire it")
        if self.paused:
            raise InvalidStateTransition("cannot fire: the schedule is paused")
        if moment <= self.cursor:
            raise InvalidStateTransition(
                f"the firing at {at_text(moment)} was already dealt with",
                fired_at=at_text(moment),
            )

    # ---- events ------------------------------------------------------------------------

    @event(Changed)
    def _changed(self, *, changes: dict[str, Any], at: str, actor: str) -> None:
        for name, value in changes.items():
            if name == "timing":
                self.timing = Timing(**value)
                self.cursor = moment_of(at)
            elif name == "catch_up":
                self.catch_up = check_catch_up(value)
            else:
                setattr(self, name, value)

    @event(Paused)
    def _paused(self, *, actor: str) -> None:
        self.paused = True

    @event(Resumed)
    def _resumed(self, *, at: str, actor: str) -> None:
        self.paused = False
        self.cursor = max(self.cursor, moment_of(at))

    @event(Fired)
    def _fired(self, *, fired_at: str, session_id: str, actor: str) -> None:
        self.cursor = moment_of(fired_at)
        self.last_fired_at = self.cursor
        self.last_session_id = uuid.UUID(session_id)
        self.firings += 1

    @event(FiringRefused)
    def _firing_refused(self, *, fired_at: str, error: ErrorPayload, actor: str) -> None:
        self.cursor = moment_of(fired_at)

    @event(FiringsLetGo)
    def _firings_let_go(self, *, through: str, actor: str) -> None:
        self.cursor = moment_of(through)

    @event(Deleted)
    def _deleted(self, *, actor: str) -> None:
        self.deleted = True
