// CoAgentor Outlook Calendar: everything `azd up` provisions. Subscription scope so azd can create the
// resource group; each resource lives in a module under ./modules. See docs/deploying.md.
targetScope = 'subscription'

// ----------------------------------------------------------------------------------------------------
// Environment
// ----------------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the azd environment. Names the resource group and seeds the token that makes resource names unique.')
param environmentName string

@minLength(1)
@description('Region for all resources. It must offer Flex Consumption: az functionapp list-flexconsumption-locations.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the person or pipeline running azd (azd passes the signed-in principal). Gets a data-plane role on the vault only when grantOperatorSecretsAccess is true.')
param principalId string = ''

@description('Opt-in: give principalId Key Vault Secrets Officer on the vault, to store the app\'s secrets after provisioning (docs/deploying.md). Off by default: nobody holds standing access to users\' token caches; turn it on for the one provisioning that stores the secrets, then remove the assignment.')
param grantOperatorSecretsAccess bool = false

@description('Kind of principal principalId is: User for a person, ServicePrincipal for a pipeline.')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

// ----------------------------------------------------------------------------------------------------
// What the app reads (shared/config.py). Defaults equal the code defaults; tests/unit/test_infra.py checks.
// ----------------------------------------------------------------------------------------------------

@minLength(1)
@description('Application (client) id of the Outlook Calendar app registration, a separate registration from any Teams one. Not a secret. OUTLOOK_CLIENT_ID.')
param outlookClientId string

@description('How the app proves itself to Entra ID. managed_identity (default): no client secret; the app registration trusts the Function App\'s user-assigned managed identity through a federated identity credential (modules/app-registration-trust.bicep when outlookAppUniqueName is set, else the az command in docs/deploying.md) and MSAL sends that identity\'s token as a client assertion. The app registration must be in this deployment\'s tenant. client_secret: the secret stored in Key Vault as outlook-client-secret. OUTLOOK_CLIENT_CREDENTIAL.')
@allowed([
  'managed_identity'
  'client_secret'
])
param outlookClientCredential string = 'managed_identity'

@description('uniqueName of the Outlook Calendar app registration, set once with az rest (docs/deploying.md, "No client secret"). With it and outlookClientCredential managed_identity, this deployment adds the federated identity credential itself (the deployer needs Application Developer, Application Administrator, Cloud Application Administrator or to own the registration). Empty: add it with az ad app federated-credential create.')
param outlookAppUniqueName string = ''

@description('Directory (tenant) id the Outlook Calendar app registration lives in: the app disabled or missing there (AADSTS7000112 / 700016) is the service\'s own failure, in one customer tenant that tenant admin\'s. Empty: only personal accounts and many tenants at once count as the service\'s. OUTLOOK_APP_TENANT_ID.')
param outlookAppTenantId string = ''

@description('Microsoft identity platform authority. /common takes work, school and personal Microsoft accounts. OUTLOOK_AUTHORITY.')
param outlookAuthority string = 'https://login.microsoftonline.com/common'

@description('Microsoft Graph base URL. GRAPH_BASE_URL.')
param graphBaseUrl string = 'https://graph.microsoft.com/v1.0'

@description('URL of the integrations page the browser returns to after connecting a calendar; empty for the page this app serves at /api/integrations. INTEGRATIONS_PAGE_URL.')
param integrationsPageUrl string = ''

@description('Public HTTPS URL Microsoft Graph POSTs change notifications to (lifecycle notifications go to it + /lifecycle); empty for this app\'s own route, https://<app>.azurewebsites.net/api/outlook/notifications. Set it when the app is reached through a custom domain or a gateway. NOTIFICATION_URL.')
param notificationUrl string = ''

@minLength(1)
@description('Base URL of the CoAgentor agent API. AGENT_API_URL.')
param agentApiUrl string

@minLength(1)
@description('URL of the CoAgentor platform endpoint that receives status events (signed CloudEvents telling users their calendar needs attention). PLATFORM_EVENTS_URL.')
param platformEventsUrl string

@minLength(1)
@description('Issuer (iss) of the CoAgentor platform bearer tokens. PLATFORM_JWT_ISSUER.')
param platformJwtIssuer string

@description('Audience (aud) of the CoAgentor platform bearer tokens. PLATFORM_JWT_AUDIENCE.')
param platformJwtAudience string = 'coagentor-outlook-calendar'

@minLength(1)
@description('Public key that verifies CoAgentor platform tokens: a whole PEM with \\n for line breaks, or only the base64 between the BEGIN/END lines on one line, or a JWKS ({"keys": [...]}, tokens name their key with kid) so the platform can rotate. Public keys, not secrets. PLATFORM_JWT_PUBLIC_KEY.')
param platformJwtPublicKey string

@minValue(0)
@description('Seconds before a meeting starts that the agent is sent. AGENT_JOIN_LEAD_SECONDS.')
param agentJoinLeadSeconds int = 120

@minValue(0)
@description('Seconds after a meeting started that sending the agent is still worth it. AGENT_JOIN_GRACE_SECONDS.')
param agentJoinGraceSeconds int = 300

@minValue(0)
@description('A connection whose refresh token was not redeemed for this long is refreshed by the refresh timer: revocations surface and refresh tokens never near their 90-day inactivity expiry. Syncs (every notified change, every safety scan) redeem it whenever the access token has lapsed, so healthy connections rarely reach it. TOKEN_REFRESH_MAX_AGE_SECONDS.')
param tokenRefreshMaxAgeSeconds int = 43200

@minValue(0)
@description('The refresh timer also renews access tokens that expire within this many seconds; 0 (default): never ahead of need, a sync renews its access token when it has lapsed (docs/scale.md). TOKEN_REFRESH_AHEAD_SECONDS.')
param tokenRefreshAheadSeconds int = 0

@minValue(1)
@description('Token refreshes started per second at most; each writes one Key Vault secret version (a create: 300 per 10 s per vault). TOKEN_REFRESH_RATE_PER_SECOND.')
param tokenRefreshRatePerSecond int = 20

@minValue(0)
@description('A connection whose refresh keeps failing transiently shows a warning after this many seconds. TOKEN_WARNING_AFTER_SECONDS.')
param tokenWarningAfterSeconds int = 21600

@minValue(0)
@description('An Active connection whose calendar syncs keep failing shows a warning after this many seconds. SYNC_WARNING_AFTER_SECONDS.')
param syncWarningAfterSeconds int = 1800

@minValue(1)
@description('Days ahead the calendar is synchronised. SYNC_WINDOW_DAYS.')
param syncWindowDays int = 14

@minValue(60)
@description('Seconds between full resyncs of a calendar, the safety net under delta sync. FULL_RESYNC_SECONDS.')
param fullResyncSeconds int = 86400

@minValue(1)
@description('Seconds before a failed agent deployment is retried. DEPLOY_RETRY_SECONDS.')
param deployRetrySeconds int = 15

@minValue(1)
@description('Timeout of outgoing HTTP calls (Graph, identity platform, agent API). HTTP_TIMEOUT_SECONDS.')
param httpTimeoutSeconds int = 20

@minValue(1)
@description('Seconds before an undelivered status event is first retried; the wait doubles, at most an hour. PLATFORM_EVENTS_RETRY_SECONDS.')
param platformEventsRetrySeconds int = 30

@minValue(60)
@description('Seconds after publishing that a status event is still retried; then it goes to status-events-poison with an error log. PLATFORM_EVENTS_RETRY_FOR_SECONDS.')
param platformEventsRetryForSeconds int = 86400

@description('Seconds an agent may wait in a meeting lobby before the user is told (once per try) to ask the organiser to admit it. LOBBY_NUDGE_SECONDS.')
param lobbyNudgeSeconds int = 60

@description('Seconds after an agent was not admitted (or its lobby wait timed out) before the next try is deployed, while the meeting is on. AGENT_RETRY_DELAY_SECONDS.')
param agentRetryDelaySeconds int = 120

@minValue(1)
@description('Tries in all (the first deployment included) to get an agent admitted to one meeting. AGENT_MAX_ATTEMPTS.')
param agentMaxAttempts int = 3

@description('Seconds before an agent is due to join that the readiness check looks for what would stop it (connection, moved or deleted event, changed link) and tells the user. READINESS_CHECK_SECONDS.')
param readinessCheckSeconds int = 600

@description('NCRONTAB (6 fields, UTC) of the token refresh timer. REFRESH_SCHEDULE.')
param refreshSchedule string = '0 7 * * * *'

@description('NCRONTAB (6 fields, UTC) of the calendar scan timer, the safety net behind Graph change notifications (which bring each change within seconds): every 6 hours by default, chosen from measurements in docs/scale.md. SCAN_SCHEDULE.')
param scanSchedule string = '0 13 */6 * * *'

@description('NCRONTAB (6 fields, UTC) of the timer that renews Graph subscriptions before they expire and subscribes connections that have none. RENEW_SCHEDULE.')
param renewSchedule string = '0 23 * * * *'

@description('NCRONTAB (6 fields, UTC) of the timer that deletes token caches no connection or pending sign-in names. RECONCILE_SCHEDULE.')
param reconcileSchedule string = '0 17 3 * * *'

@description('NCRONTAB (6 fields, UTC) of the timer that prunes past meetings and long-dead connections. PRUNE_SCHEDULE.')
param pruneSchedule string = '0 47 3 * * *'

@description('NCRONTAB (6 fields, UTC) of the deployment watchdog: meetings whose deploy message should have surfaced 45 s ago without a verdict are queued again (one filtered Table Storage query per run). WATCHDOG_SCHEDULE.')
param watchdogSchedule string = '*/15 * * * * *'

@description('NCRONTAB (6 fields, UTC) of read_secondary_calendars: connections reading calendars besides their default one (which Graph does not notify) are synced. SECONDARY_CALENDARS_SCHEDULE.')
param secondaryCalendarsSchedule string = '0 4,34 * * * *'

@minValue(900)
@description('A token cache no row names is deleted only once older than this (seconds). ORPHAN_CACHE_GRACE_SECONDS.')
param orphanCacheGraceSeconds int = 3600

@minValue(1)
@description('Days a meeting is kept after it ended. MEETING_RETENTION_DAYS.')
param meetingRetentionDays int = 30

@minValue(1)
@description('Days after its last successful refresh that a connection in Error is removed (its refresh token is dead after 90 days unused). ERROR_CONNECTION_RETENTION_DAYS.')
param errorConnectionRetentionDays int = 90

@description('Origins of the CoAgentor web app, comma-separated (https://app.example.com): the only callers allowed by CORS, and the only senders whose postMessage hands the Integrations page its platform token. PLATFORM_WEB_ORIGINS.')
param platformWebOrigins string = ''

@description('Where the Integrations page\'s "Upgrade your plan" leads: the CoAgentor web app\'s plan page (https). Empty: the page says where to upgrade in words. UPGRADE_URL.')
param upgradeUrl string = ''

@description('The Outlook Calendar help article the Integrations page links to (https). Empty: no link. HELP_ARTICLE_URL.')
param helpArticleUrl string = ''

// ----------------------------------------------------------------------------------------------------
// Alerts (modules/alerts.bicep)
// ----------------------------------------------------------------------------------------------------

@description('Resource id of an existing action group the alerts notify (e-mail, SMS, webhook). Empty: alerts fire and show in the portal but notify no one.')
param alertActionGroupId string = ''

@description('Alert when Graph change notifications stop arriving for an hour. The app subscribes every connected calendar; turn this on once enough calendars are connected that an hour without a change is unusual.')
param notificationsAlertEnabled bool = false

// ----------------------------------------------------------------------------------------------------
// Hosting
// ----------------------------------------------------------------------------------------------------

@description('Replication of the storage account (connections, meetings, queues, the host\'s state). Zone-redundant by default; Standard_GZRS/RAGZRS where the region pairs.')
@allowed([
  'Standard_ZRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
  'Standard_GRS'
  'Standard_RAGRS'
])
param storageSkuName string = 'Standard_ZRS'

@description('Days a deleted token cache stays recoverable in Key Vault before Key Vault purges it (7-90; purge protection is on, so erasure cannot purge sooner). Shorter = erased users\' caches gone sooner.')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteRetentionInDays int = 30

@description('While true, token caches and clientStates still stored as Key Vault secrets (the layout before sealed secrets) are read, moved into Table Storage and deleted from the vault, and the app keeps Key Vault Secrets Officer for that. Set false once reconcile_secrets logs legacy_secrets_moved 0: the app then only reads secrets (Secrets User). A new deployment has nothing to move: false.')
param migrateVaultTokenCaches bool = true

@description('Name of the Key Vault key (RSA) that wraps the data keys of the sealed token caches.')
param tokenCacheKeyName string = 'token-cache-key'

@description('Memory per Flex Consumption instance in MB (0.25, 1 or 2 cores). 512: make load measured the app at ~100 MB resident with 1,000 connections (docs/scale.md, "Instance size"); the $10 per 1,000 connections goal is missed at 2,048.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 512

@description('Most instances the app scales out to. Graph allows 4 concurrent requests per mailbox whatever this is.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Always-ready instances for the HTTP function group. Graph validates the notification URL within 10 s when a subscription is created and wants each notification answered within 3 s; a cold instance can miss both. 1 instance of 512 MB is about 1.3 million GB-s of baseline a month (2,048 MB: 5.2 million) (docs/reliability.md states the cost); 0 scales from zero.')
@minValue(0)
@maxValue(10)
param httpAlwaysReady int = 1

@description('Custom domain to serve the app through Azure Front Door with per-address rate limits in its WAF (modules/front-door.bicep), e.g. outlook.example.com; the app then accepts traffic from that Front Door only, and the redirect, notification and page URLs use this host. Empty: no Front Door, the app is reached at its own azurewebsites.net host (docs/security.md, "Rate limits by address").')
param frontDoorHostName string = ''

// ----------------------------------------------------------------------------------------------------
// Names
// ----------------------------------------------------------------------------------------------------

// Prefixes from the Cloud Adoption Framework abbreviations, as in the azd templates.
var abbrs = {
  resourceGroup: 'rg-'
  managedIdentity: 'id-'
  appServicePlan: 'plan-'
  functionApp: 'func-'
  storageAccount: 'st'
  keyVault: 'kv-'
  logAnalytics: 'log-'
  applicationInsights: 'appi-'
}
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.functionApp}outlookcal-${resourceToken}'

// The app's storage layout. Add a table or queue here; the role assignments cover the whole account.
var tableNames = [
  'authflows'
  'pendingclaims'
  'connections'
  'meetings'
  'eventindex'
  'syncstate'
  'autojoin'
  'subscriptions'
  'calendars'
  'sealedsecrets'
  'datakeys'
  'agenttries'
  'workspacemeetings'
  'apprefusals'
  'meetingsdue'
]
var queueNames = [
  'sync-jobs'
  'agent-deployments'
  'token-refresh'
  'status-events'
  'user-erasures'
  'fanout-pages'
  'subscription-jobs'
  'agent-recalls'
  'agent-progress'
]

// Secrets live in Key Vault under these names; the app settings carry only the names.
var outlookClientSecretName = 'outlook-client-secret'
var agentApiKeySecretName = 'agent-api-key'
var queueSigningSecretName = 'queue-signing-key'
// whsec_<base64>, shared with the CoAgentor platform; signs status events (docs/deploying.md).
var platformEventsSecretName = 'platform-events-secret'
// whsec_<base64>, shared with the CoAgentor agent platform; verifies its agent statuses (docs/deploying.md).
var agentStatusSecretName = 'agent-status-secret'

// The host name is fixed by the app name, so these URLs are known before the app exists.
// Register exactly this redirect URI on the app registration (docs/deploying.md).
var functionAppUrl = 'https://${functionAppName}.azurewebsites.net'
// With Front Door, everything public is reached through its custom domain.
var publicUrl = empty(frontDoorHostName) ? functionAppUrl : 'https://${frontDoorHostName}'
var outlookRedirectUri = '${publicUrl}/api/outlook/callback'
// Graph POSTs change notifications here (and lifecycle notifications to .../lifecycle): the app's
// public HTTPS route, validated by Graph when each subscription is created (docs/deploying.md).
var notificationRoute = empty(notificationUrl) ? '${publicUrl}/api/outlook/notifications' : notificationUrl
var integrationsPage = empty(integrationsPageUrl) ? '${publicUrl}/api/integrations' : integrationsPageUrl

// A PEM with literal \n sequences passes through; a bare base64 body gets its BEGIN/END lines. The code
// turns \n back into line breaks, so the setting stays one line either way.
// A JWKS (for key rotation: the token's kid picks the key) passes through as it is.
var platformJwtPublicKeyPem = contains(platformJwtPublicKey, 'BEGIN PUBLIC KEY') || startsWith(trim(platformJwtPublicKey), '{') ? platformJwtPublicKey : '-----BEGIN PUBLIC KEY-----\\n${platformJwtPublicKey}\\n-----END PUBLIC KEY-----'

// ----------------------------------------------------------------------------------------------------
// Resources
// ----------------------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: '${abbrs.resourceGroup}${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentity}outlookcal-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.logAnalytics}${resourceToken}'
    applicationInsightsName: '${abbrs.applicationInsights}${resourceToken}'
    location: location
    tags: tags
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: 'outlookcal-${resourceToken}'
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    actionGroupId: alertActionGroupId
    notificationsAlertEnabled: notificationsAlertEnabled
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageAccount}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: 'app-package'
    tableNames: tableNames
    queueNames: queueNames
    skuName: storageSkuName
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module keyVault 'modules/key-vault.bicep' = {
  name: 'keyVault'
  scope: rg
  params: {
    name: '${abbrs.keyVault}${resourceToken}'
    location: location
    tags: tags
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
    tokenCacheKeyName: tokenCacheKeyName
  }
}

// No client secret: the app registration trusts the app's managed identity (Microsoft Graph Bicep).
module appRegistrationTrust 'modules/app-registration-trust.bicep' = if (outlookClientCredential == 'managed_identity' && !empty(outlookAppUniqueName)) {
  name: 'appRegistrationTrust'
  scope: rg
  params: {
    appUniqueName: outlookAppUniqueName
    identityPrincipalId: identity.outputs.principalId
  }
}

module roleAssignments 'modules/role-assignments.bicep' = {
  name: 'roleAssignments'
  scope: rg
  params: {
    appPrincipalId: identity.outputs.principalId
    operatorPrincipalId: grantOperatorSecretsAccess ? principalId : ''
    operatorPrincipalType: principalType
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    tokenCacheKeyName: keyVault.outputs.wrappingKeyName
    migrateVaultTokenCaches: migrateVaultTokenCaches
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

module frontDoor 'modules/front-door.bicep' = if (!empty(frontDoorHostName)) {
  name: 'frontDoor'
  scope: rg
  params: {
    profileName: 'afd-outlookcal-${resourceToken}'
    wafPolicyName: 'wafoutlookcal${resourceToken}'
    tags: tags
    originHostName: '${functionAppName}.azurewebsites.net'
    customHostName: frontDoorHostName
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'functionApp'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.appServicePlan}${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    httpAlwaysReady: httpAlwaysReady
    frontDoorId: !empty(frontDoorHostName) ? frontDoor.outputs.frontDoorId : ''
    // Every setting shared/config.py reads, except the storage and credential ones the module adds.
    appSettings: {
      KEY_VAULT_URI: keyVault.outputs.uri
      OUTLOOK_CLIENT_ID: outlookClientId
      OUTLOOK_CLIENT_SECRET_NAME: outlookClientSecretName
      OUTLOOK_CLIENT_CREDENTIAL: outlookClientCredential
      OUTLOOK_AUTHORITY: outlookAuthority
      OUTLOOK_APP_TENANT_ID: outlookAppTenantId
      OUTLOOK_REDIRECT_URI: outlookRedirectUri
      NOTIFICATION_URL: notificationRoute
      GRAPH_BASE_URL: graphBaseUrl
      INTEGRATIONS_PAGE_URL: integrationsPage
      AGENT_API_URL: agentApiUrl
      AGENT_API_KEY_SECRET_NAME: agentApiKeySecretName
      QUEUE_SIGNING_SECRET_NAME: queueSigningSecretName
      PLATFORM_JWT_ISSUER: platformJwtIssuer
      PLATFORM_JWT_AUDIENCE: platformJwtAudience
      PLATFORM_JWT_PUBLIC_KEY: platformJwtPublicKeyPem
      AGENT_JOIN_LEAD_SECONDS: string(agentJoinLeadSeconds)
      AGENT_JOIN_GRACE_SECONDS: string(agentJoinGraceSeconds)
      TOKEN_REFRESH_MAX_AGE_SECONDS: string(tokenRefreshMaxAgeSeconds)
      TOKEN_REFRESH_AHEAD_SECONDS: string(tokenRefreshAheadSeconds)
      TOKEN_REFRESH_RATE_PER_SECOND: string(tokenRefreshRatePerSecond)
      TOKEN_WARNING_AFTER_SECONDS: string(tokenWarningAfterSeconds)
      SYNC_WARNING_AFTER_SECONDS: string(syncWarningAfterSeconds)
      SYNC_WINDOW_DAYS: string(syncWindowDays)
      FULL_RESYNC_SECONDS: string(fullResyncSeconds)
      DEPLOY_RETRY_SECONDS: string(deployRetrySeconds)
      HTTP_TIMEOUT_SECONDS: string(httpTimeoutSeconds)
      PLATFORM_EVENTS_URL: platformEventsUrl
      PLATFORM_EVENTS_SECRET_NAME: platformEventsSecretName
      TOKEN_CACHE_KEY_NAME: keyVault.outputs.wrappingKeyName
      MIGRATE_VAULT_TOKEN_CACHES: string(migrateVaultTokenCaches)
      PLATFORM_EVENTS_RETRY_SECONDS: string(platformEventsRetrySeconds)
      PLATFORM_EVENTS_RETRY_FOR_SECONDS: string(platformEventsRetryForSeconds)
      AGENT_STATUS_SECRET_NAME: agentStatusSecretName
      LOBBY_NUDGE_SECONDS: string(lobbyNudgeSeconds)
      AGENT_RETRY_DELAY_SECONDS: string(agentRetryDelaySeconds)
      AGENT_MAX_ATTEMPTS: string(agentMaxAttempts)
      READINESS_CHECK_SECONDS: string(readinessCheckSeconds)
      REFRESH_SCHEDULE: refreshSchedule
      SCAN_SCHEDULE: scanSchedule
      RENEW_SCHEDULE: renewSchedule
      RECONCILE_SCHEDULE: reconcileSchedule
      PRUNE_SCHEDULE: pruneSchedule
      WATCHDOG_SCHEDULE: watchdogSchedule
      SECONDARY_CALENDARS_SCHEDULE: secondaryCalendarsSchedule
      ORPHAN_CACHE_GRACE_SECONDS: string(orphanCacheGraceSeconds)
      MEETING_RETENTION_DAYS: string(meetingRetentionDays)
      ERROR_CONNECTION_RETENTION_DAYS: string(errorConnectionRetentionDays)
      PLATFORM_WEB_ORIGINS: platformWebOrigins
      UPGRADE_URL: upgradeUrl
      HELP_ARTICLE_URL: helpArticleUrl
      // PAGE_TOKEN_FROM_URL is deliberately never set here: a token in the page URL is a local-stack
      // convenience (it would let a link plant someone else's CoAgentor session).
    }
  }
  // The host starts as soon as its settings exist: let it find its storage and vault roles in place.
  dependsOn: [
    roleAssignments
  ]
}

// ----------------------------------------------------------------------------------------------------
// Outputs: names, ids and URIs only (azd stores them in .azure/<env>/.env).
// ----------------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
// What a federated identity credential on the app registration must trust (docs/deploying.md).
output AZURE_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output AZURE_FUNCTION_APP_URI string = functionApp.outputs.uri
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_APPLICATION_INSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output OUTLOOK_REDIRECT_URI string = outlookRedirectUri
output NOTIFICATION_URL string = notificationRoute
output SERVICE_API_NAME string = functionApp.outputs.name
output FRONT_DOOR_ENDPOINT string = !empty(frontDoorHostName) ? frontDoor.outputs.endpointHostName : ''
