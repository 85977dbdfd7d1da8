// The function app on a Flex Consumption plan, running as a user-assigned identity.
// App settings = what the code reads (appSettings, built in main.bicep) + what the Functions host and
// Application Insights read (hostSettings below). Every value is a name, id, URI or tuning number: the
// code reads its secrets from Key Vault by name, so no secret ever appears here.

@description('Name of the function app; also the host name <name>.azurewebsites.net.')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Region of the plan and the app (must offer Flex Consumption).')
param location string

@description('Tags applied to the plan and the app.')
param tags object = {}

@description('azd service name from azure.yaml; azd finds the app to deploy to by this tag.')
param serviceName string = 'api'

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity (AZURE_CLIENT_ID, AzureWebJobsStorage__clientId). Not a secret.')
param identityClientId string

@description('Name of the storage account used by the host, the deployment package and the app.')
param storageAccountName string

@description('Blob container holding the deployment package.')
param deploymentContainerName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Python version of the Flex Consumption runtime.')
@allowed([
  '3.11'
])
param pythonVersion string = '3.11'

@description('Memory per instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 512

@description('Most instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Always-ready instances for the HTTP function group (0 = scale from zero).')
@minValue(0)
@maxValue(10)
param httpAlwaysReady int = 1

@description('Front Door profile id (X-Azure-FDID) the app accepts requests from only; empty: open to the internet.')
param frontDoorId string = ''

@description('App settings the code reads (see shared/config.py), merged with the host settings below.')
param appSettings object

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption scales out per function across the region's infrastructure; zone redundancy for Flex needs a zone-redundant storage account and a supporting region, a per-deployment choice (docs/deploying.md).
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the OAuth callback, the Graph notification routes and the API the CoAgentor web app calls from browsers must be reachable from the internet; every non-public route checks a platform token.
  // checkov:skip=CKV_AZURE_17: browsers call the API with a bearer token; they hold no client certificate.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero per function; always-ready instances are a cost choice (functionAppConfig.scaleAndConcurrency.alwaysReady), not a safety one.
  // checkov:skip=CKV_AZURE_213: Flex Consumption does not replace instances on an App Service health check; GET /api/health (storage, queues, Key Vault) is probed by the alerts in alerts.bicep.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Any @Microsoft.KeyVault(...) app setting would be resolved with this identity (there are none today).
    keyVaultReferenceIdentity: identityId
    // Kudu/SCM publishing uses Entra ID only (basic publishing credentials off below); no FTP at all.
    clientAffinityEnabled: false
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // CORS is the app's (shared/triggers/http.py, PLATFORM_WEB_ORIGINS): the platform's own stays off.
      cors: {
        allowedOrigins: []
      }
      // Behind Front Door (front-door.bicep), only requests from this profile reach the app, so its
      // per-address rate limits cannot be walked around; deployments (SCM) keep their own rules.
      ipSecurityRestrictionsDefaultAction: empty(frontDoorId) ? 'Allow' : 'Deny'
      ipSecurityRestrictions: empty(frontDoorId) ? [] : [
        {
          name: 'front-door-only'
          action: 'Allow'
          priority: 100
          tag: 'ServiceTag'
          ipAddress: 'AzureFrontDoor.Backend'
          headers: {
            'x-azure-fdid': [
              frontDoorId
            ]
          }
        }
      ]
      scmIpSecurityRestrictionsUseMain: false
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        // HTTP functions scale as one group on Flex Consumption; instances kept running for it answer
        // Graph's validation handshake (10 s) and notifications (3 s) without a cold start.
        alwaysReady: httpAlwaysReady > 0 ? [
          {
            name: 'http'
            instanceCount: httpAlwaysReady
          }
        ] : []
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Read by the Functions host and the Application Insights agent, not by the app code (except the two
// service URIs and AZURE_CLIENT_ID, which shared/config.py also lists). Flex Consumption takes the
// runtime and version from functionAppConfig: FUNCTIONS_WORKER_RUNTIME, FUNCTIONS_EXTENSION_VERSION,
// WEBSITE_RUN_FROM_PACKAGE and WEBSITE_CONTENT* are not used there and must not be set.
var hostSettings = {
  // Identity-based AzureWebJobsStorage: no connection string, the user-assigned identity.
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  // Which identity DefaultAzureCredential/ManagedIdentityCredential use in the app (Key Vault, tables, queues).
  AZURE_CLIENT_ID: identityClientId
  // Not a secret (azd samples set it the same way); ingestion itself is authenticated with Entra ID.
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

// No username/password publishing (FTP or SCM): deployments authenticate with Entra ID.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

resource functionAppSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_66: this is the appsettings config, not siteConfig; on Flex Consumption failed requests are traced in Application Insights (APPLICATIONINSIGHTS_CONNECTION_STRING).
  // checkov:skip=CKV_AZURE_63: likewise: HTTP requests are logged in Application Insights.
  // checkov:skip=CKV_AZURE_65: likewise: errors are logged in Application Insights, never shown to callers.
  // checkov:skip=CKV_AZURE_222: the app is public by design (see the site above).
  // checkov:skip=CKV_AZURE_80: a Python app: no .NET Framework.
  // checkov:skip=CKV_AZURE_88: Flex Consumption deploys from a blob container and has no Azure Files content share.
  // checkov:skip=CKV_AZURE_13: App Service Authentication would block the anonymous OAuth callback and notification routes; every other route verifies the CoAgentor platform JWT itself (shared/platform_auth.py).
  parent: functionApp
  name: 'appsettings'
  properties: union(appSettings, hostSettings)
}

output id string = functionApp.id
output name string = functionApp.name
output uri string = 'https://${functionApp.properties.defaultHostName}'
