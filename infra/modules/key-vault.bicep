// Key Vault for the app's secrets (Outlook client secret, agent API key, status-event signing secret)
// and the RSA key that wraps the data keys of the per-connection token caches, which are sealed in
// Table Storage (shared/adapters/envelope.py). Access is Azure RBAC only (no access policies); see
// role-assignments.bicep.

@description('Name of the vault (3-24 letters, digits and hyphens, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Region of the vault.')
param location string

@description('Tags applied to the vault.')
param tags object = {}

@description('Days a deleted vault or secret stays recoverable (7-90).')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Log Analytics workspace that receives the vault\'s audit log (every secret read, write and delete, by whom).')
param logAnalyticsWorkspaceId string

@description('Name of the RSA key that wraps the data keys of the sealed token caches.')
param tokenCacheKeyName string = 'token-cache-key'

@description('Now, at deployment (only a parameter default may call utcNow): the key expires two years on.')
param deployedAt string = utcNow()

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: Flex Consumption without VNet integration reaches the vault over its public endpoint; access is Entra ID + RBAC only (no access policies, no keys) and audited below. Private endpoint + VNet: docs/security.md, next steps.
  // checkov:skip=CKV_AZURE_189: same reason: the app has no private network path to the vault yet.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // Once on, purge protection cannot be turned off: deleted secrets (and the vault) stay recoverable
    // for the whole retention period and cannot be purged early, even by the app's identity.
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Every data-plane operation on the vault (AuditEvent: who read, wrote, deleted or purged which secret)
// goes to Log Analytics, so access to users' token caches is reviewable.
resource audit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

// The key-encryption key: wrapKey/unwrapKey only, never exportable. Rotated yearly by Key Vault (a new
// version); the app's daily reconcile_secrets re-wraps its few data keys under the new version (old
// versions stay enabled for unwrapping until then; docs/security.md, "Key rotation").
resource tokenCacheKey 'Microsoft.KeyVault/vaults/keys@2023-07-01' = {
  // checkov:skip=CKV_AZURE_112: HSM-backed keys need the Premium SKU; the key only wraps data keys, rotated yearly and audited.
  parent: vault
  name: tokenCacheKeyName
  properties: {
    kty: 'RSA'
    keySize: 3072
    keyOps: [
      'wrapKey'
      'unwrapKey'
    ]
    attributes: {
      enabled: true
      exportable: false
      exp: dateTimeToEpoch(dateTimeAdd(deployedAt, 'P2Y'))
    }
    rotationPolicy: {
      attributes: {
        expiryTime: 'P2Y'
      }
      lifetimeActions: [
        {
          trigger: {
            timeAfterCreate: 'P365D'
          }
          action: {
            type: 'rotate'
          }
        }
        {
          trigger: {
            timeBeforeExpiry: 'P30D'
          }
          action: {
            type: 'notify'
          }
        }
      ]
    }
  }
}

output id string = vault.id
output wrappingKeyName string = tokenCacheKey.name
output name string = vault.name
output uri string = vault.properties.vaultUri
