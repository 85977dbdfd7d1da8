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
- erase my data, orphaned token caches,    shared/triggers/lifecycle.py → shared/services/lifecycle.py
  pruning (erase_user_data, reconcile_secrets, prune_data)
- CORS preflight (PLATFORM_WEB_ORIGINS)    shared/triggers/cors.py; security headers in shared/triggers/http.py
- Graph change notifications, subscription shared/triggers/notifications.py → shared/services/{notifications,
  jobs, renew_subscriptions, recall_agent  subscriptions,recall}.py
- agent progress (POST /api/agents/status,  shared/triggers/agent_progress.py → shared/services/agent_progress.py;
  lobby nudges, readiness checks)          the agent state's transition table: shared/agent_states.py
- meeting link recognition                 shared/meeting_links.py
- Graph / MSAL / Tables / Queues / Key Vault / agent API: one adapter each in shared/adapters/
"""

import azure.functions as func

from shared import redaction
from shared.triggers import (
    agent_progress,
    api,
    autojoin,
    background,
    connect,
    cors,
    lifecycle,
    notifications,
    page,
    status_events,
)
from shared.wiring import configure_telemetry

redaction.install()  # no token, code or secret in any log line or exception text
configure_telemetry()  # Application Insights, when APPLICATIONINSIGHTS_CONNECTION_STRING is set

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
for blueprint in (connect.bp, api.bp, autojoin.bp, background.bp, page.bp, status_events.bp, lifecycle.bp,
                  cors.bp, notifications.bp, agent_progress.bp):
    app.register_functions(blueprint)
