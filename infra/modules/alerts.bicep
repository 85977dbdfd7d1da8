// What wakes an operator: log search alerts (scheduled query rules) over the app's Application Insights
// telemetry. Every metric, dimension and log event queried here is named in
// shared/adapters/telemetry.py; tests/unit/test_alerts.py checks each query against those names.
// Tables are the Application Insights ones (customMetrics, traces): the rules are scoped to the component.
// Counters are exported as deltas, so sum(valueSum) over the window is the number of events in it.

@description('Prefix of the alert rule names (the environment\'s resource token keeps them unique).')
param namePrefix string

@description('Region of the alert rules (the Application Insights component\'s region).')
param location string

@description('Tags applied to the alert rules.')
param tags object = {}

@description('Resource id of the Application Insights component the rules query.')
param applicationInsightsId string

@description('Resource id of the action group that is notified (e-mail, SMS, webhook, ITSM). Empty: the alerts still fire and show in the portal, but notify no one.')
param actionGroupId string = ''

@description('Alert when Graph change notifications stop arriving for an hour (outlook_notifications_received, counted by the notification routes). Off by default: with few calendars connected an hour without a change is normal.')
param notificationsAlertEnabled bool = false

var actionGroups = empty(actionGroupId) ? [] : [
  actionGroupId
]

// Application-level identity failure: Microsoft refused the service's own credentials or registration
// (expired or rotated client secret, app disabled or deleted). Every user is affected; no user can fix it.
resource appIdentityFailure 'Microsoft.Insights/scheduledQueryRules@2021-08-01' = {
  name: '${namePrefix}-app-identity-failure'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Outlook Calendar: the app\'s own identity is refused by Microsoft'
    description: 'Token calls failed with invalid_client / unauthorized_client (AADSTS7000222, 7000215, 700016, 7000112...). Rotate the client secret in Key Vault (outlook-client-secret) or fix the app registration; connections stay Active and recover by themselves. docs/deploying.md.'
    severity: 1
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'union (customMetrics | where name == "outlook_token_refreshes" and tostring(customDimensions["fixed_by"]) == "service" | project n = valueSum), (traces | where message == "app_identity_failure" | project n = 1.0) | summarize failures = sum(n)'
          timeAggregation: 'Total'
          metricMeasureColumn: 'failures'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroups
    }
  }
}

// Messages in any -poison queue: a job failed five times (maxDequeueCount) and will not run again by itself.
resource poisonMessages 'Microsoft.Insights/scheduledQueryRules@2021-08-01' = {
  name: '${namePrefix}-poison-messages'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Outlook Calendar: messages in a poison queue'
    description: 'A queue message failed maxDequeueCount times and sits in <queue>-poison (gauge outlook_queue_messages, written every 5 minutes by watch_queues). Read the function\'s exceptions for that queue, fix, then move or delete the messages.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "outlook_queue_messages" and tostring(customDimensions["queue"]) endswith "-poison" | summarize messages = max(valueMax)'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'messages'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroups
    }
  }
}

// Deployments missed or late: an agent reached the meeting more than a minute after its intended time,
// or not at all (too late, agent API failure, lost deployment found afterwards).
resource deploymentsMissedOrLate 'Microsoft.Insights/scheduledQueryRules@2021-08-01' = {
  name: '${namePrefix}-deployments-missed-or-late'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Outlook Calendar: agent deployments missed or late'
    description: 'outlook_deployments with punctuality late or missed, or a deployment_missed log (a meeting that started without a verdict). Check the agent API, the agent-deployments queue and function scale-out.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'union (customMetrics | where name == "outlook_deployments" and tostring(customDimensions["punctuality"]) in ("late", "missed") | project n = valueSum), (traces | where message startswith "deployment_missed" | project n = 1.0) | summarize deployments = sum(n)'
          timeAggregation: 'Total'
          metricMeasureColumn: 'deployments'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroups
    }
  }
}

// Sync failure rate: more than 10 % of at least 20 sync runs in 15 minutes failed for the service's
// own reasons (result failed: exceptions, unclassified outcomes). Throttling and user errors are not counted.
resource syncFailureRate 'Microsoft.Insights/scheduledQueryRules@2021-08-01' = {
  name: '${namePrefix}-sync-failure-rate'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Outlook Calendar: calendar syncs failing'
    description: 'Share of outlook_syncs with result failed over 15 minutes (at least 20 runs). Look at exceptions of sync_calendar; Graph outages and bugs show here first.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "outlook_syncs" | summarize total = sum(valueSum), failed = sumif(valueSum, tostring(customDimensions["result"]) == "failed") | where total >= 20 | project failure_rate = 100.0 * failed / total'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'failure_rate'
          operator: 'GreaterThan'
          threshold: 10
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroups
    }
  }
}

// Notifications stopped: no Graph change notification in an hour while users have calendars connected
// (subscriptions expired, the notification URL unreachable, Graph dropping them).
resource notificationsStopped 'Microsoft.Insights/scheduledQueryRules@2021-08-01' = {
  name: '${namePrefix}-notifications-stopped'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Outlook Calendar: Graph change notifications stopped'
    description: 'No outlook_notifications_received for an hour. Check subscription renewals and the notification endpoint; periodic scans still pick changes up, more slowly.'
    severity: 2
    enabled: notificationsAlertEnabled
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "outlook_notifications_received" | summarize received = sum(valueSum)'
          timeAggregation: 'Total'
          metricMeasureColumn: 'received'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroups
    }
  }
}

// Rows the timers' walks could not read or act on (a damaged or hand-edited row, a value the code no
// longer understands, or a dependency failing at that moment): each is logged at ERROR with event
// walk_row_failed and its keys, and skipped; the walk goes on, and the next run meets a damaged row
// again until someone looks. docs/reliability.md.
resource walkRowsFailed 'Microsoft.Insights/scheduledQueryRules@2021-08-01' = {
  name: '${namePrefix}-walk-rows-failed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Outlook Calendar: background walks skip rows they cannot read'
    description: 'traces with customDimensions.event == walk_row_failed name what was skipped by its keys (connection_id, secret_name, or table_partition and table_row; never values) and the exception type. A storage or Key Vault outage during a walk also raises it (the other alerts show that); a row that fails every run is damaged: inspect it. Its connection may go unrenewed or unpruned until it is fixed or removed.'
    severity: 3
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: 'traces | where tostring(customDimensions["event"]) == "walk_row_failed" | summarize rows = count()'
          timeAggregation: 'Total'
          metricMeasureColumn: 'rows'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroups
    }
  }
}
