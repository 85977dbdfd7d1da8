"""Join rules and per-meeting choices, as the API changes them (`../shared/API.md`, "Join rules" and
`PUT /api/meetings/{id}/autojoin`). Every change is applied to the user's pending deployments at once
(`MeetingLifecycle.replan`): a meeting now joined gets its deploy message, one now skipped loses its
SCHEDULED agent. Each call is safe to repeat: storing the same rules or choice again changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, replace

from shared.autojoin import DEFAULT_RULES, Decision, JoinRules, parse_rules
from shared.clock import Clock
from shared.ports import JoinRulesStore, Meeting, MeetingStore, StoredOverride
from shared.services.meeting_lifecycle import MeetingLifecycle, applies_to


class NotASeries(ValueError):
    """`series: true` for a meeting that is not part of a recurring series."""


@dataclass(frozen=True)
class Choice:
    """What `PUT /api/meetings/{id}/autojoin` asks: join (True), skip (False) or back to the rules
    (None), for this occurrence or its whole series."""

    join: bool | None
    series: bool


class AutojoinService:
    def __init__(self, *, store: JoinRulesStore, meetings: MeetingStore, lifecycle: MeetingLifecycle,
                 clock: Clock) -> None:
        self._store = store
        self._meetings = meetings
        self._lifecycle = lifecycle
        self._clock = clock

    def rules(self, user_id: str) -> JoinRules:
        """The user's rules as the API shows them: join_lead_seconds filled with the service's default."""
        return self._shown(self._store.get_rules(user_id) or DEFAULT_RULES)

    def set_rules(self, user_id: str, body: object) -> JoinRules:
        """Store the whole rules object and apply it to pending deployments. Fields added after the
        client was written may be left out: they keep their stored value. Raises InvalidRules."""
        rules = parse_rules(body, self._store.get_rules(user_id))
        self._store.put_rules(user_id, rules)
        self._lifecycle.replan(user_id)
        return self._shown(rules)

    def _shown(self, rules: JoinRules) -> JoinRules:
        if rules.join_lead_seconds is not None:
            return rules
        return replace(rules, join_lead_seconds=self._lifecycle.context_lead_seconds)

    def choose(self, user_id: str, meeting_key: str, choice: Choice) -> tuple[Meeting, Decision] | None:
        """Record the choice for the meeting (each calendar holding it: a choice follows that calendar's
        event through re-syncs, moves and reconnects), apply it, and return the meeting as it is now.
        None when the user has no such meeting; raises NotASeries for `series` on a single meeting."""
        meeting = self._meetings.get(user_id, meeting_key)
        if meeting is None:
            return None
        in_series = [s for s in meeting.sources if s.series_id]
        if choice.series and not in_series:
            raise NotASeries("This meeting is not part of a recurring series: send \"series\": false")
        now = self._clock.now()
        current = self._store.overrides(user_id)
        if choice.series:
            series_ids = {(s.connection_id, s.series_id) for s in in_series}
            # Every choice made for single occurrences of the series gives way to the series' own.
            superseded = [o for o in current if not o.series and (o.connection_id, o.series_id) in series_ids]
            if choice.join is None:
                superseded += [o for o in current if o.series and (o.connection_id, o.target_id) in series_ids]
            else:
                self._store.put_overrides(user_id, [
                    StoredOverride(s.connection_id, s.series_id or "", series=True, join=choice.join, set_at=now)
                    for s in in_series])
        else:
            superseded = []
            if choice.join is None:
                superseded = [o for o in current if not o.series and applies_to(o, meeting)]
            else:
                self._store.put_overrides(user_id, [
                    StoredOverride(s.connection_id, s.event_id, series=False, join=choice.join, set_at=now,
                                   series_id=s.series_id, until=meeting.end)
                    for s in meeting.sources])
        if superseded:
            self._store.remove_overrides(user_id, superseded)
        self._lifecycle.replan(user_id)
        fresh = self._meetings.get(user_id, meeting_key) or meeting
        return fresh, self._lifecycle.decide(fresh)
