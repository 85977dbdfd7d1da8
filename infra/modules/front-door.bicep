// Azure Front Door (Standard) in front of the Function App, with per-address rate limits in its WAF.
// Rate limits by client address belong at the edge (docs/security.md, "Rate limits by address"): behind
// Azure's front ends the app sees a client's address only in X-Forwarded-For, which anyone can set,
// and counting per address inside many Flex Consumption instances would cost a storage write per
// request. The per-user limits stay in the app (they need the verified platform token).
//
// Deployed only when main.bicep's `frontDoorHostName` is set: the custom domain users and Microsoft
// reach the service at (validated by a DNS TXT record the operator adds; docs/deploying.md). The
// Function App then accepts traffic from this profile only (function-app.bicep, X-Azure-FDID).
// WAF custom rules: learn.microsoft.com/azure/web-application-firewall/afds/waf-front-door-rate-limit

@description('Name of the Front Door profile.')
param profileName string

@description('Name of the WAF policy (letters and digits only).')
param wafPolicyName string

@description('Resource tags.')
param tags object = {}

@description('The Function App\'s own host name (<name>.azurewebsites.net): the origin.')
param originHostName string

@description('The custom domain the service is reached at through Front Door, e.g. outlook.example.com.')
param customHostName string

@description('Sign-in starts and OAuth callbacks allowed per client address per 5 minutes (then 429).')
@minValue(10)
param signInsPerAddressPer5Minutes int = 60

@description('Other /api requests allowed per client address per minute (then 429). Graph notifications and agent statuses are exempt: a few Microsoft and platform addresses send them all.')
@minValue(100)
param apiRequestsPerAddressPerMinute int = 600

resource profile 'Microsoft.Cdn/profiles@2024-02-01' = {
  name: profileName
  location: 'global'
  tags: tags
  sku: {
    name: 'Standard_AzureFrontDoor'
  }
}

resource endpoint 'Microsoft.Cdn/profiles/afdEndpoints@2024-02-01' = {
  parent: profile
  name: 'outlookcal'
  location: 'global'
  tags: tags
  properties: {
    enabledState: 'Enabled'
  }
}

resource originGroup 'Microsoft.Cdn/profiles/originGroups@2024-02-01' = {
  parent: profile
  name: 'functions'
  properties: {
    loadBalancingSettings: {
      sampleSize: 4
      successfulSamplesRequired: 3
      additionalLatencyInMilliseconds: 50
    }
    healthProbeSettings: {
      probePath: '/api/health'
      probeRequestType: 'GET'
      probeProtocol: 'Https'
      probeIntervalInSeconds: 100
    }
  }
}

resource origin 'Microsoft.Cdn/profiles/originGroups/origins@2024-02-01' = {
  parent: originGroup
  name: 'function-app'
  properties: {
    hostName: originHostName
    originHostHeader: originHostName
    httpsPort: 443
    priority: 1
    weight: 1000
    enforceCertificateNameCheck: true
    enabledState: 'Enabled'
  }
}

resource customDomain 'Microsoft.Cdn/profiles/customDomains@2024-02-01' = {
  parent: profile
  name: replace(customHostName, '.', '-')
  properties: {
    hostName: customHostName
    tlsSettings: {
      certificateType: 'ManagedCertificate'
      minimumTlsVersion: 'TLS12'
    }
  }
}

resource route 'Microsoft.Cdn/profiles/afdEndpoints/routes@2024-02-01' = {
  parent: endpoint
  name: 'all'
  dependsOn: [
    origin
  ]
  properties: {
    originGroup: {
      id: originGroup.id
    }
    customDomains: [
      {
        id: customDomain.id
      }
    ]
    supportedProtocols: [
      'Https'
    ]
    patternsToMatch: [
      '/*'
    ]
    forwardingProtocol: 'HttpsOnly'
    httpsRedirect: 'Disabled'
    linkToDefaultDomain: 'Enabled'
  }
}

// Paths exempt from the per-address API limit: Graph's notifications (Microsoft's few addresses send
// every tenant's) and the agent platform's signed statuses. Each is authenticated by its own secret.
// Matched on the path itself (RequestUri carries the query string, which a caller could fill with an
// exempt path to walk around the limit), with or without the scheme and host before it.
var exempt = [
  '^(https?://[^/]+)?/api/(outlook/notifications(/lifecycle)?|agents/status)(\\?|$)'
]

resource waf 'Microsoft.Network/FrontDoorWebApplicationFirewallPolicies@2025-03-01' = {
  // checkov:skip=CKV_AZURE_226: managed rule sets (DRS) need the Premium tier; the app validates every input itself (docs/security.md) and this policy carries the rate limits.
  name: wafPolicyName
  location: 'global'
  tags: tags
  sku: {
    name: 'Standard_AzureFrontDoor'
  }
  properties: {
    policySettings: {
      enabledState: 'Enabled'
      mode: 'Prevention'
      customBlockResponseStatusCode: 429
      customBlockResponseBody: base64('{"error":"too_many_requests","message":"Too many requests from this address. Wait a few minutes and try again."}')
    }
    customRules: {
      rules: [
        {
          name: 'SignInsPerAddress'
          priority: 10
          enabledState: 'Enabled'
          ruleType: 'RateLimitRule'
          rateLimitDurationInMinutes: 5
          rateLimitThreshold: signInsPerAddressPer5Minutes
          groupBy: [
            {
              variableName: 'SocketAddr'
            }
          ]
          matchConditions: [
            {
              matchVariable: 'RequestUri'
              operator: 'Contains'
              transforms: [
                'Lowercase'
              ]
              matchValue: [
                '/api/outlook/connect'
                '/api/outlook/callback'
              ]
            }
          ]
          action: 'Block'
        }
        {
          name: 'ApiPerAddress'
          priority: 20
          enabledState: 'Enabled'
          ruleType: 'RateLimitRule'
          rateLimitDurationInMinutes: 1
          rateLimitThreshold: apiRequestsPerAddressPerMinute
          groupBy: [
            {
              variableName: 'SocketAddr'
            }
          ]
          matchConditions: [
            {
              matchVariable: 'RequestUri'
              operator: 'Contains'
              transforms: [
                'Lowercase'
              ]
              matchValue: [
                '/api/'
              ]
            }
            {
              matchVariable: 'RequestUri'
              operator: 'RegEx'
              negateCondition: true
              transforms: [
                'Lowercase'
              ]
              matchValue: exempt
            }
          ]
          action: 'Block'
        }
      ]
    }
  }
}

resource securityPolicy 'Microsoft.Cdn/profiles/securityPolicies@2024-02-01' = {
  parent: profile
  name: 'rate-limits'
  properties: {
    parameters: {
      type: 'WebApplicationFirewall'
      wafPolicy: {
        id: waf.id
      }
      associations: [
        {
          domains: [
            {
              id: customDomain.id
            }
            {
              id: endpoint.id
            }
          ]
          patternsToMatch: [
            '/*'
          ]
        }
      ]
    }
  }
}

@description('The profile\'s Front Door id: the Function App accepts requests carrying it in X-Azure-FDID only.')
output frontDoorId string = profile.properties.frontDoorId

@description('Point the custom domain (CNAME) here.')
output endpointHostName string = endpoint.properties.hostName
