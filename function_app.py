"""CoAgentor Outlook Calendar: the Azure Functions app (Python v2 programming model).

Where things live:
- connect (start, OAuth callback, claim)   shared/triggers/connect.py  → shared/services/connect.py
- connections, upcoming meetings, health   shared/triggers/api.py
- join rules, per-meeting join/skip        shared/triggers/autojoin.py → shared/services/autojoin.py
- will a meeting get an agent, and why     shared/autojoin.py (the one decision); its lifecycle (attach,
                                           decide, schedule, claim) in shared/services/meeting_lifecycle.py
- refresh_tokens, scan_calendars,          shared/triggers/background.py → shared/services/{accounts,sync,deploy}.py
  sync_calendar, deploy_agent
- deliver_status_event (status events      shared/triggers/status_events.py → shared/adapters/platform_events.py
  to the platform, signed CloudEvents)
- meeting link recognition                 shared/meeting_links.py
- Graph / MSAL / Tables / Queues / Key Vault / agent API: one adapter each in shared/adapters/
"""

import azure.functions as func

from shared.triggers import api, autojoin, background, connect, page, status_events
from shared.wiring import configure_telemetry

configure_telemetry()  # Application Insights, when APPLICATIONINSIGHTS_CONNECTION_STRING is set

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
for blueprint in (connect.bp, api.bp, autojoin.bp, background.bp, page.bp, status_events.bp):
    app.register_functions(blueprint)
