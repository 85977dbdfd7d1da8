// No client secret: the Outlook Calendar app registration trusts the Function App's user-assigned
// managed identity through a federated identity credential, and the app authenticates to Entra ID with
// that identity's token for api://AzureADTokenExchange as its client assertion (MSAL,
// shared/adapters/identity.py). learn.microsoft.com/entra/workload-id/
// workload-identity-federation-config-app-trust-managed-identity ("Bicep" tab).
//
// The app registration itself is not created here (docs/deploying.md step 2 creates it with the Azure
// CLI); it is referenced by its uniqueName, which the operator sets once (Graph Bicep's client-provided
// key: learn.microsoft.com/graph/templates/how-to-reference-existing-resources). The deploying
// principal needs Application Administrator, Application Developer, Cloud Application Administrator or
// ownership of the app registration (the Graph Bicep extension acts as the deployer).
//
// Limits (same page): only user-assigned identities; the identity and the app registration must be in
// the same tenant (the app may be multi-tenant and still serve users of other tenants); at most 20
// federated credentials per app; the credential takes a few minutes to propagate (AADSTS70021 /
// 700211 meanwhile).
extension 'br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:0.1.8-preview'

@description('uniqueName of the existing Outlook Calendar app registration (set once with az rest, docs/deploying.md).')
param appUniqueName string

@description('Principal (object) id of the user-assigned managed identity the Function App runs as: the subject the credential trusts.')
param identityPrincipalId string

@description('Name of the federated identity credential on the app registration (3-120 letters, digits, - or _).')
param credentialName string = 'outlookcal-function-identity'

resource app 'Microsoft.Graph/applications@v1.0' existing = {
  uniqueName: appUniqueName
}

resource trust 'Microsoft.Graph/applications/federatedIdentityCredentials@v1.0' = {
  name: '${app.uniqueName}/${credentialName}'
  description: 'The CoAgentor Outlook Calendar Function App\'s managed identity; replaces the client secret.'
  // Global Entra ID; US Government api://AzureADTokenExchangeUSGov, China api://AzureADTokenExchangeChina.
  audiences: [
    'api://AzureADTokenExchange'
  ]
  issuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
  subject: identityPrincipalId
}

output credentialName string = credentialName
output issuerUrl string = trust.issuer
