"""The RSVP states, outside-invitation options, platforms and `why` codes are defined once, in
shared/autojoin.py; the OpenAPI document and the page's rules form must say the same."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared.autojoin import ExternalInvites, Response, Why
from shared.calendar_events import Unlisted
from shared.meeting_links import Platform

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = json.loads((REPO / "shared" / "openapi.json").read_text())["components"]["schemas"]
PAGE = (REPO / "shared" / "web" / "integrations.html").read_text()


def form_values(name: str) -> list[str]:
    return re.findall(rf'<input type="(?:checkbox|radio)" name="{name}" value="([a-z_]+)">', PAGE)


def test_the_openapi_document_lists_what_the_domain_defines():
    assert SCHEMAS["Response"]["enum"] == [r.value for r in Response]
    assert SCHEMAS["Platform"]["enum"] == [p.value for p in Platform]
    assert SCHEMAS["Why"]["enum"] == [w.value for w in Why]
    assert SCHEMAS["JoinRules"]["properties"]["external_invites"]["enum"] == [e.value for e in ExternalInvites]
    for code in Why:
        assert f"`{code.value}`" in SCHEMAS["Why"]["description"], code
    assert SCHEMAS["UnlistedReason"]["enum"] == [u.value for u in Unlisted]


def test_the_pages_rules_form_offers_every_choice_the_api_takes():
    assert form_values("responses") == [r.value for r in Response]
    assert form_values("external_invites") == [e.value for e in ExternalInvites]
    assert form_values("platforms") == [p.value for p in Platform]


def test_the_pages_rules_form_offers_each_kind_of_event_rule_against_its_default():
    from shared.autojoin import NEWER_RULES, EventChoice

    for rule, default in NEWER_RULES.items():
        other = EventChoice.SKIP if default is EventChoice.JOIN else EventChoice.JOIN
        assert form_values(rule) == [other.value], rule

