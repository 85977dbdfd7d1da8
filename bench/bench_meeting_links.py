"""How fast is meeting-link recognition on a realistic calendar? `make bench` runs this.

    python -m bench.bench_meeting_links [--events 3000] [--rounds 5] [--seed 20240601]

Builds a deterministic corpus of Graph events (seeded): Outlook HTML invitations for Teams, Zoom
and Google Meet meetings, some behind Safe Links, Proofpoint or Google redirects, some with the
link only in the location, and ordinary events without any meeting link. Then it times
`find_meeting_link` over every event and, for scale, a bare `re.findall(r"https?://\\S+")` over the
same bodies, and prints events per second for both and their ratio (best of the rounds, the two
taking turns in each round so that load on a shared machine falls on both). It also checks every
answer against the meeting the generator put in: a fast wrong answer is not a result.
"""

from __future__ import annotations

import argparse
import base64
import random
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from shared.calendar_events import copy_of
from shared.meeting_links import find_meeting_link

NAIVE = re.compile(r"https?://\S+")

WORDS = [
    *("agenda", "review", "roadmap", "budget", "hiring", "plan", "quarterly", "results", "customer", "escalation"),
    *("design", "sprint", "retro", "demo", "launch", "metrics", "pipeline", "forecast", "partner", "onboarding"),
    *("security", "audit", "migration", "release", "notes", "feedback", "priorities", "blockers", "owners"),
    *("timeline", "risks", "dependencies", "decisions", "actions", "follow-up"),
]
OTHER_LINKS = (
    "https://contoso.sharepoint.com/sites/Planning/Shared%20Documents/Q3%20Roadmap.docx?web=1",
    "https://contoso-my.sharepoint.com/:p:/g/personal/jane_doe_contoso_com/EbX1aBcDeFgHiJ?e=Ab12Cd",
    "https://github.com/contoso/platform/pull/4821",
    "https://contoso.atlassian.net/browse/PLAT-3312",
    "https://docs.google.com/document/d/1aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789/edit",
    "https://www.linkedin.com/in/jane-doe-1234567/",
)


def teams_quote(text: str) -> str:
    """Percent-encoding as Teams writes it: lower-case escapes (%3a, %40, %7b)."""
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote(text, safe=""))


class Corpus:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    # Links ------------------------------------------------------------------------------------

    def guid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def b64(self, n: int) -> str:
        return base64.b64encode(self.rng.randbytes(n)).decode().rstrip("=").replace("+", "A").replace("/", "B")

    def teams(self) -> tuple[str, str]:
        thread = f"19:meeting_{self.b64(36)}@thread.v2"
        context = teams_quote(f'{{"Tid":"{self.guid()}","Oid":"{self.guid()}"}}')
        host = self.rng.choices(["teams.microsoft.com", "teams.live.com", "gov.teams.microsoft.us"], [90, 7, 3])[0]
        if self.rng.random() < 0.15:
            number = str(self.rng.randrange(10**11, 10**14))
            return f"https://{host}/meet/{number}?p={self.b64(12)}", f"teams:meet:{number}"
        url = f"https://{host}/l/meetup-join/{teams_quote(thread)}/0?context={context}"
        return url, f"teams:{thread}"

    def zoom(self) -> tuple[str, str]:
        number = str(self.rng.randrange(10**9, 10**11))
        host = self.rng.choice(["zoom.us", "us02web.zoom.us", "us06web.zoom.us", "contoso.zoom.us", "zoomgov.com"])
        url = f"https://{host}/j/{number}?pwd={self.b64(24)}.1"
        if self.rng.random() < 0.3:
            url += "&from=addon"
        return url, ("zoom:gov:" if host == "zoomgov.com" else "zoom:") + number

    def meet(self) -> tuple[str, str]:
        letters = "abcdefghijklmnopqrstuvwxyz"
        code = "-".join("".join(self.rng.choice(letters) for _ in range(n)) for n in (3, 4, 3))
        return f"https://meet.google.com/{code}", f"google_meet:{code}"

    def wrap(self, url: str) -> str:
        roll = self.rng.random()
        if roll < 0.25:
            region = self.rng.choice(["nam12", "eur03", "apc01", "gbr01"])
            return (
                f"https://{region}.safelinks.protection.outlook.com/?url={quote(url, safe='')}"
                f"&data=05%7C02%7C%7C{self.b64(12)}%7C{self.guid()}%7C0%7C0%7C638512345678901234%7CUnknown"
                f"&sdata={quote(self.b64(32), safe='')}%3D&reserved=0"
            )
        if roll < 0.32:
            encoded = quote(url, safe="/").replace("-", "%2D").replace("_", "%5F").replace("%", "-").replace("/", "_")
            return f"https://urldefense.proofpoint.com/v2/url?u={encoded}&d=DwMFaQ&c={self.b64(30)}&r={self.b64(30)}&e="
        if roll < 0.36:
            body = url.replace("%", "*")
            stars = url.count("%")
            encoded = base64.urlsafe_b64encode(b"%" * stars).decode().rstrip("=")
            return f"https://urldefense.com/v3/__{body}__;{encoded}!!{self.b64(6)}!{self.b64(20)}$"
        return url

    # Bodies -----------------------------------------------------------------------------------

    def prose(self, words: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(words)).capitalize() + "."

    def notes_html(self) -> str:
        parts = []
        for _ in range(self.rng.randint(0, 6)):
            parts.append(
                f'<p class="MsoNormal"><span style="font-size:11.0pt">{self.prose(self.rng.randint(8, 40))}</span></p>'
            )
            if self.rng.random() < 0.4:
                link = self.wrap(self.rng.choice(OTHER_LINKS)).replace("&", "&amp;")
                parts.append(f'<p class="MsoNormal"><a href="{link}">{self.prose(3)}</a></p>')
        return "".join(parts)

    def signature(self) -> str:
        """A long Outlook signature and legal footer, every link behind Safe Links (about 8 KB)."""
        links = "".join(
            f'<a href="https://nam12.safelinks.protection.outlook.com/?url={quote(url, safe="")}&amp;data=05%7C02'
            f'%7C%7C{self.b64(12)}%7C{self.guid()}%7C0%7C0%7C638512345678901234%7CUnknown&amp;sdata='
            f'{quote(self.b64(32), safe="")}%3D&amp;reserved=0">{url[8:40]}</a> | '
            for url in (*OTHER_LINKS, "https://www.contoso.com/", "https://twitter.com/contoso",
                        "https://www.contoso.com/privacy", "https://aka.ms/JoinTeamsMeeting")
        )
        footer = " ".join(self.prose(60) for _ in range(8))
        return (f'<div id="Signature"><p class="MsoNormal"><b>Jane Doe</b> | Senior Account Executive | Contoso '
                f'Ltd.<br>+1 425 555 0100 | {links}</p><p class="MsoNormal" style="font-size:8.0pt;color:gray">'
                f"CONFIDENTIALITY NOTICE: {footer}</p></div>")

    def html(self, inner: str) -> dict[str, str]:
        head = (
            '<html xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office">'
            '<head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"><style>'
            'p.MsoNormal,li.MsoNormal{margin:0cm;font-size:11.0pt;font-family:"Calibri",sans-serif}'
            'a:link{color:#0563C1;text-decoration:underline}</style></head><body lang="EN-US">'
        )
        return {"contentType": "html", "content": f"{head}{inner}</body></html>"}

    def teams_block(self, href: str) -> str:
        href = href.replace("&", "&amp;")
        return (
            '<div style="width:100%"><span style="white-space:nowrap;color:#5F5F5F;opacity:.36">'
            + "_" * 80
            + '</span></div><div class="me-email-text" style="color:#252424;font-family:\'Segoe UI\'">'
            '<div style="margin-top:24px;margin-bottom:20px"><span style="font-size:24px">'
            'Microsoft Teams meeting</span></div><div style="margin-bottom:20px"><div><span>'
            "Join on your computer, mobile app or room device</span>"
            f'</div><a href="{href}" class="me-email-headline" target="_blank">Click here to join the meeting</a></div>'
            f"<div><span>Meeting ID: {self.rng.randrange(10**11, 10**12)}</span><br>"
            f"<span>Passcode: {self.b64(5)}</span>"
            '<div><a href="https://www.microsoft.com/en-us/microsoft-teams/download-app">Download Teams</a> | '
            '<a href="https://www.microsoft.com/microsoft-teams/join-a-meeting">Join on the web</a></div></div>'
            '<div><a href="https://aka.ms/JoinTeamsMeeting?omkt=en-US">Learn More</a> | '
            f'<a href="https://teams.microsoft.com/meetingOptions/?organizerId={self.guid()}&amp;tenantId={self.guid()}'
            '&amp;messageId=0&amp;language=en-US">Meeting options</a></div></div>'
        )

    def zoom_block(self, href: str, number: str) -> str:
        return (
            f'<p class="MsoNormal">Join Zoom Meeting<br><a href="{href.replace("&", "&amp;")}">'
            f"{href.split('?')[0]}</a></p>"
            f'<p class="MsoNormal">Meeting ID: {number}<br>Passcode: {self.rng.randrange(100000, 999999)}</p>'
            f'<p class="MsoNormal">One tap mobile<br>+16469313860,,{number}# US<br>+13017158592,,{number}# US</p>'
            f'<p class="MsoNormal">Find your local number: <a href="https://us02web.zoom.us/u/{self.b64(6)}">'
            "https://us02web.zoom.us/u/kdKx8ZQw1</a></p>"
        )

    def meet_block(self, href: str) -> str:
        redirect = (
            f"https://www.google.com/url?q={quote(href, safe='')}&amp;sa=D&amp;source=calendar&amp;usg={self.b64(20)}"
        )
        return (
            f'<div>Join with Google Meet: <a href="{redirect}">{href.removeprefix("https://")}</a></div>'
            f"<div>Or dial: (US) +1 415-555-0132 PIN: {self.rng.randrange(10**8, 10**9)}#</div>"
            '<div>Learn more about Meet at: <a href="https://support.google.com/a/users/answer/9282720">'
            "https://support.google.com/a/users/answer/9282720</a></div>"
        )

    # Events -----------------------------------------------------------------------------------

    def event(self, i: int) -> tuple[dict[str, Any], str | None]:
        kind = self.rng.choices(["teams", "zoom", "meet", "none"], [35, 20, 10, 35])[0]
        event: dict[str, Any] = {
            "id": f"AAMkAGI2TG93{i:08d}AAA=",
            "subject": self.prose(self.rng.randint(2, 6)).rstrip("."),
            "isOnlineMeeting": False,
            "onlineMeeting": None,
            "location": {"displayName": ""},
            "locations": [],
        }
        if kind == "teams":
            url, key = self.teams()
            if self.rng.random() < 0.7:
                event.update(
                    isOnlineMeeting=True, onlineMeetingProvider="teamsForBusiness", onlineMeeting={"joinUrl": url}
                )
                event["location"] = {"displayName": "Microsoft Teams Meeting"}
            event["body"] = self.html(self.notes_html() + self.teams_block(self.wrap(url)))
            return event, key
        if kind == "zoom":
            url, key = self.zoom()
            if self.rng.random() < 0.3:
                event["location"] = {"displayName": url}
            if self.rng.random() < 0.3:
                text = f"{self.prose(20)}\n\nJoin Zoom Meeting\n{url}\n\nMeeting ID: {key.rsplit(':', 1)[1]}\n"
                event["body"] = {"contentType": "text", "content": text}
            else:
                event["body"] = self.html(self.notes_html() + self.zoom_block(self.wrap(url), key.rsplit(":", 1)[1]))
            return event, key
        if kind == "meet":
            url, key = self.meet()
            event["body"] = self.html(self.notes_html() + self.meet_block(url))
            return event, key
        notes = self.notes_html()
        if self.rng.random() < 0.2:
            notes += '<p>Dial-in: <a href="tel:+18005550199,,4433221#">+1 800 555 0199</a>, code 443 3221#</p>'
        event["body"] = self.html(notes) if self.rng.random() < 0.8 else {"contentType": "text", "content": ""}
        return event, None


def translate(event: dict[str, Any]) -> object:
    """What the sync does with each event: `calendar_events.copy_of` (the event's own platform, its
    link, its identity, the facts the rules read)."""
    return copy_of(event, account_email="alice@contoso.com", tenant_id="contoso")


def best_of(rounds: int, *runs: Callable[[], object]) -> list[float]:
    """The best time of each run over ``rounds`` rounds, the runs taking turns within each round.

    Taking turns means a burst of load on a shared machine slows both sides alike, so the ratio
    holds still where two separate series would drift apart.
    """
    best = [float("inf")] * len(runs)
    for _ in range(rounds):
        for i, run in enumerate(runs):
            started = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_meeting_links", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args(argv)

    corpus = Corpus(args.seed)
    pairs = [corpus.event(i) for i in range(args.events)]
    events = [event for event, _ in pairs]
    for n, event in enumerate(events):  # times, so the translation goes all the way (find_meeting_link ignores them)
        event.setdefault("start", {"dateTime": f"2026-12-{1 + n % 28:02d}T09:00:00.0000000", "timeZone": "UTC"})
        event.setdefault("end", {"dateTime": f"2026-12-{1 + n % 28:02d}T09:30:00.0000000", "timeZone": "UTC"})
    bodies = [str(event.get("body", {}).get("content", "")) for event in events]

    wrong = []
    for event, expected in pairs:
        found = find_meeting_link(event)
        if (found.key if found else None) != expected:
            wrong.append((event["id"], expected, found.key if found else None))
    platforms = Counter(expected.split(":", 1)[0] if expected else "no link" for _, expected in pairs)

    ours, naive, whole = best_of(
        args.rounds,
        lambda: [find_meeting_link(event) for event in events],
        lambda: [NAIVE.findall(body) for body in bodies],
        # What the sync does per event: the event's own platform, the link, its identity, the facts.
        lambda: [translate(event) for event in events],
    )

    # The same events with a long Outlook signature and footer (Safe Links) appended to HTML bodies.
    signed = []
    for event in events:
        body = event.get("body")
        if isinstance(body, dict) and body.get("contentType") == "html":
            event = {**event, "body": {**body, "content": str(body["content"]).replace(
                "</body>", corpus.signature() + "</body>")}}
        signed.append(event)
    signed_links, signed_whole = best_of(
        args.rounds,
        lambda: [find_meeting_link(event) for event in signed],
        lambda: [translate(event) for event in signed],
    )
    signed_size = sum(len(str((e.get("body") or {}).get("content", ""))) for e in signed)

    size = sum(len(body) for body in bodies)
    count = len(events)
    print(f"corpus: {count} events (seed {args.seed}), {size / 1e6:.1f} MB of bodies, avg {size // count} chars")
    print("        " + ", ".join(f"{name} {n}" for name, n in sorted(platforms.items())))
    print(f"find_meeting_link          {count / ours:>10,.0f} events/s   ({ours * 1e3:.1f} ms per pass)")
    print(f're.findall(r"https?://\\S+") {count / naive:>10,.0f} events/s   ({naive * 1e3:.1f} ms per pass)')
    print(f"ratio: find_meeting_link takes {ours / naive:.1f}x the time of the bare regex pass")
    print(f"per event: find_meeting_link {ours / count * 1e6:.1f} us, the whole Graph event -> meeting translation "
          f"(calendar_events.copy_of) {whole / count * 1e6:.1f} us, bare regex {naive / count * 1e6:.1f} us")
    print(f"with a long signature (Safe Links, avg {signed_size // count} chars): find_meeting_link "
          f"{signed_links / count * 1e6:.1f} us, copy_of {signed_whole / count * 1e6:.1f} us per event")
    if wrong:
        print(f"WRONG ANSWERS: {len(wrong)} of {count}, e.g. {wrong[:3]}", flush=True)
        return 1
    print(f"answers: all {count} match the generated meetings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
