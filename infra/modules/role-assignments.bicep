// Data-plane roles for the function app's identity, each on the narrowest scope that works, plus the
// optional operator grant that lets the person deploying put the app's secrets into the vault.
// Names are guid(scope, principal, role) so a redeployment finds the same assignment.

@description('Principal (object) id of the function app\'s user-assigned identity.')
param appPrincipalId string

@description('Principal (object) id of the operator who sets the app\'s secrets after provisioning. Empty: no grant.')
param operatorPrincipalId string = ''

@description('Kind of principal operatorPrincipalId is: User for a person, ServicePrincipal for a pipeline.')
@allowed([
  'User'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('Name of the storage account the app and the Functions host use.')
param storageAccountName string

@description('Name of the Key Vault holding the app\'s secrets and token caches.')
param keyVaultName string

@description('Name of the Key Vault key that wraps the data keys of the sealed token caches.')
param tokenCacheKeyName string

@description('True while token caches still stored as Key Vault secrets are moved into Table Storage: the app needs Secrets Officer (read, then delete) for that; false: Secrets User (read only).')
param migrateVaultTokenCaches bool = true

@description('Name of the Application Insights component the app sends telemetry to.')
param applicationInsightsName string

// Built-in role definition ids (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7' // Key Vault Secrets Officer
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User
  keyVaultCryptoServiceEncryptionUser: 'e147488a-f6f5-4113-8e2d-b22465e65bf6' // Key Vault Crypto Service Encryption User
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource tokenCacheKey 'Microsoft.KeyVault/vaults/keys@2023-07-01' existing = {
  parent: vault
  name: tokenCacheKeyName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Storage Blob Data Owner: the Functions host keeps its locks, timer schedules and keys in blobs
// (AzureWebJobsStorage), and Flex Consumption reads the deployment package from a container in the
// same account. Owner, not Contributor, is what the Functions documentation lists for the host.
resource appBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Queue Data Contributor: the app enqueues sync jobs and agent deployments (with visibility
// delays), the host's queue triggers read and delete them and create and write the -poison queues.
resource appQueueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Table Data Contributor: the app reads and writes entities in its tables (flows, claims,
// connections, meetings, event index, sync state).
resource appTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault Secrets User: the app reads its own secrets (the Outlook client secret where one is used,
// the agent API key, the status-event signing secret). Read only: it cannot write, delete or list
// values, and it grants nothing on keys.
resource appKeyVaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!migrateVaultTokenCaches) {
  name: guid(vault.id, appPrincipalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault Secrets Officer only while token caches of the old layout (one secret per connection) are
// moved into sealed Table Storage rows: reading and then deleting them needs it. Purge protection on
// the vault stops this role from purging deleted secrets. Off (migrateVaultTokenCaches false): Secrets User.
resource appKeyVaultSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (migrateVaultTokenCaches) {
  name: guid(vault.id, appPrincipalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault Crypto Service Encryption User on the one key that wraps the data keys, not the vault:
// get (public part), wrapKey and unwrapKey on that key only. It cannot read any secret, sign, or
// touch another key; the private key never leaves the vault.
resource appTokenCacheKeyUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(tokenCacheKey.id, appPrincipalId, roles.keyVaultCryptoServiceEncryptionUser)
  scope: tokenCacheKey
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultCryptoServiceEncryptionUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Monitoring Metrics Publisher: Entra ID-authenticated telemetry ingestion, needed because the
// Application Insights component has local (instrumentation key) authentication disabled.
resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault Secrets Officer for the operator, only when main.bicep's grantOperatorSecretsAccess opts in:
// with RBAC authorization even a subscription Owner cannot set secrets until granted a data-plane role.
// Needed once to store the app's secrets (docs/deploying.md, step 6), then deleted: no person keeps
// standing access to users' token caches.
resource operatorKeyVaultSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}
