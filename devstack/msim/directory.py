"""Who exists in the simulated Microsoft cloud: tenants, accounts and app registrations.

Identifiers are fixed so that tests, demos and stored connections can refer to them across runs.
Personal Microsoft accounts follow the real shape: they live in the consumers tenant
(`9188040d-...`), their object id in tokens is `00000000-0000-0000-<cid>` while Graph `/me` answers
with the 16-hex-digit cid as `id`, and `/me` has `mail: null`.

`frank@contoso.com` has a mailbox Graph cannot reach (hosted on-premises in a hybrid deployment):
he signs in and `/me` answers, but every calendar request answers 404
`MailboxNotEnabledForRESTAPI` (learn.microsoft.com/graph/hybrid-rest-support; public reports in
microsoftgraph/msgraph-sdk-javascript#1756 and microsoftgraph/microsoft-graph-docs-contrib#405).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

CONSUMERS_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
CONTOSO_TENANT_ID = "0e7be278-02ec-446a-be8d-59ca6d7800e9"
NORTHWIND_TENANT_ID = "5c537842-0e02-4742-956b-7a174fef3e48"
FABRIKAM_TENANT_ID = "2025e9e0-85d9-4ea3-b268-ce5c99c18d00"
# The tenant the CoAgentor app registration lives in: app-only (client_credentials) tokens, such as
# the one the service uses for its Key Vault, are issued here.
APP_HOME_TENANT_ID = "0c84dd60-d51f-4943-8030-ede7de1bba87"

META_TENANTS = ("common", "organizations", "consumers")

AccountKind = Literal["work", "personal"]
# Where the account's mailbox lives: only Exchange Online mailboxes answer Graph's calendar API.
MailboxHost = Literal["exchange_online", "on_premises"]


@dataclass(frozen=True)
class Tenant:
    id: str
    display_name: str
    domains: tuple[str, ...]
    kind: AccountKind
    # Conditional Access in this tenant refuses tokens for third-party apps (AADSTS53003).
    blocks_third_party_apps: bool = False


@dataclass(frozen=True)
class Account:
    upn: str
    display_name: str
    given_name: str
    surname: str
    tenant_id: str
    object_id: str  # `oid` in tokens, `uid` in client_info
    graph_id: str  # `id` on Graph /me (differs from object_id for personal accounts)
    mail: str | None  # Graph /me `mail`
    kind: AccountKind
    mailbox_host: MailboxHost = "exchange_online"

    @property
    def email(self) -> str:
        """The `email` claim of the id_token (personal accounts always have one)."""
        return self.mail or self.upn

    @property
    def identity_provider(self) -> str:
        return "live.com" if self.kind == "personal" else f"https://sts.windows.net/{self.tenant_id}/"


TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"


@dataclass(frozen=True)
class FederatedCredential:
    """A federated identity credential on an app registration (Graph `federatedIdentityCredential`:
    `name`, `issuer`, `subject`, `audiences`, `description`). A client assertion whose `iss`, `sub`
    (case-sensitive) and `aud` match one lets the app authenticate without a secret
    (learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity:
    for a managed identity the issuer is `https://login.microsoftonline.com/{tenant}/v2.0`, the
    subject its principal id, the audience `api://AzureADTokenExchange`)."""

    name: str
    issuer: str
    subject: str
    audiences: tuple[str, ...] = (TOKEN_EXCHANGE_AUDIENCE,)
    description: str = ""

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "issuer": self.issuer, "subject": self.subject,
                "audiences": list(self.audiences), "description": self.description}


@dataclass(frozen=True)
class ManagedIdentity:
    """A user-assigned managed identity attached to the local Functions host: `client_id` picks it,
    its tokens carry `principal_id` as `sub`/`oid`, and it lives in `tenant_id`."""

    client_id: str
    principal_id: str
    tenant_id: str
    name: str = "id-outlookcal-dev"


@dataclass
class AppRegistration:
    """A multi-tenant app registration that also accepts personal accounts (what `common` needs)."""

    client_id: str
    client_secret: str
    redirect_uris: list[str]
    display_name: str = "CoAgentor Outlook Calendar"
    federated_credentials: list[FederatedCredential] = field(default_factory=list)


TENANTS: tuple[Tenant, ...] = (
    Tenant(CONTOSO_TENANT_ID, "Contoso", ("contoso.com", "contoso.onmicrosoft.com"), "work"),
    Tenant(NORTHWIND_TENANT_ID, "Northwind Traders", ("northwind.com", "northwind.onmicrosoft.com"), "work"),
    Tenant(
        FABRIKAM_TENANT_ID,
        "Fabrikam",
        ("fabrikam.com", "fabrikam.onmicrosoft.com"),
        "work",
        blocks_third_party_apps=True,
    ),
    Tenant(CONSUMERS_TENANT_ID, "Microsoft Accounts", ("outlook.com", "hotmail.com", "live.com"), "personal"),
    Tenant(APP_HOME_TENANT_ID, "CoAgentor", ("coagentor.onmicrosoft.com",), "work"),
)

_BOB_CID = "692594b4d923c3c0"

ACCOUNTS: tuple[Account, ...] = (
    Account(
        upn="alice@contoso.com",
        display_name="Alice Carter",
        given_name="Alice",
        surname="Carter",
        tenant_id=CONTOSO_TENANT_ID,
        object_id="188ff867-19f1-4a4e-8bba-83a377fe7da5",
        graph_id="188ff867-19f1-4a4e-8bba-83a377fe7da5",
        mail="alice@contoso.com",
        kind="work",
    ),
    Account(
        upn="dave@contoso.com",
        display_name="Dave Fischer",
        given_name="Dave",
        surname="Fischer",
        tenant_id=CONTOSO_TENANT_ID,
        object_id="3db27212-abf8-459e-860c-f52b45667712",
        graph_id="3db27212-abf8-459e-860c-f52b45667712",
        mail="dave@contoso.com",
        kind="work",
    ),
    Account(
        upn="bob@outlook.com",
        display_name="Bob Kelly",
        given_name="Bob",
        surname="Kelly",
        tenant_id=CONSUMERS_TENANT_ID,
        object_id=f"00000000-0000-0000-{_BOB_CID[:4]}-{_BOB_CID[4:]}",
        graph_id=_BOB_CID,
        mail=None,
        kind="personal",
    ),
    Account(
        upn="erin@northwind.com",
        display_name="Erin Novak",
        given_name="Erin",
        surname="Novak",
        tenant_id=NORTHWIND_TENANT_ID,
        object_id="bc17d904-c8d0-4040-a128-d6f6d5aafb2d",
        graph_id="bc17d904-c8d0-4040-a128-d6f6d5aafb2d",
        mail="erin@northwind.com",
        kind="work",
    ),
    Account(
        upn="carol@fabrikam.com",
        display_name="Carol Reyes",
        given_name="Carol",
        surname="Reyes",
        tenant_id=FABRIKAM_TENANT_ID,
        object_id="089efff6-6bec-477c-bab6-9701cf304533",
        graph_id="089efff6-6bec-477c-bab6-9701cf304533",
        mail="carol@fabrikam.com",
        kind="work",
    ),
    Account(
        upn="frank@contoso.com",
        display_name="Frank Moreau",
        given_name="Frank",
        surname="Moreau",
        tenant_id=CONTOSO_TENANT_ID,
        object_id="6f1d2c43-58a7-4b0e-9e3c-1a7f52b8d0c4",
        graph_id="6f1d2c43-58a7-4b0e-9e3c-1a7f52b8d0c4",
        mail="frank@contoso.com",
        kind="work",
        mailbox_host="on_premises",
    ),
)


class Directory:
    """Lookups over the seeded tenants and accounts, plus work accounts added in bulk (`add_work_account`,
    `POST /_sim/users`) for load tests."""

    def __init__(self, tenants: tuple[Tenant, ...] = TENANTS, accounts: tuple[Account, ...] = ACCOUNTS) -> None:
        self.tenants = tenants
        self.accounts: tuple[Account, ...] = accounts
        self._tenant_by_key: dict[str, Tenant] = {}
        for tenant in tenants:
            self._tenant_by_key[tenant.id.lower()] = tenant
            for domain in tenant.domains:
                self._tenant_by_key[domain.lower()] = tenant
        self._account_by_upn = {a.upn.lower(): a for a in accounts}
        self._account_by_oid = {(a.tenant_id, a.object_id): a for a in accounts}
        self._account_by_graph_id = {a.graph_id.lower(): a for a in accounts}

    def work_account(self, upn: str, display_name: str | None = None) -> Account:
        """A new work account for `upn`, in the work tenant that owns its domain (not yet added).
        ValueError when the domain is no work tenant's, or the upn exists. Its object id is derived
        from the upn (uuid5), so the same upn gets the same id in every run."""
        name, _, domain = upn.strip().partition("@")
        tenant = self.tenant(domain) if domain else None
        if not name or tenant is None or tenant.kind != "work" or tenant.id == APP_HOME_TENANT_ID:
            raise ValueError(f"'{upn}' is not in a seeded work tenant's domain (contoso.com, northwind.com, ...).")
        if self.account(upn) is not None:
            raise ValueError(f"The account '{upn}' already exists.")
        object_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"msim:{upn.strip().lower()}"))
        shown = display_name or name.replace(".", " ").replace("-", " ").title()
        first, _, last = shown.partition(" ")
        return Account(upn=upn.strip().lower(), display_name=shown, given_name=first, surname=last or first,
                       tenant_id=tenant.id, object_id=object_id, graph_id=object_id, mail=upn.strip().lower(),
                       kind="work")

    def add(self, account: Account) -> None:
        """Make an account from `work_account` known to every lookup (caller holds the state lock)."""
        self.accounts = (*self.accounts, account)
        self._account_by_upn[account.upn.lower()] = account
        self._account_by_oid[(account.tenant_id, account.object_id)] = account
        self._account_by_graph_id[account.graph_id.lower()] = account

    def tenant(self, key: str) -> Tenant | None:
        """A tenant by id or verified domain (case-insensitive); None for meta-tenants and unknowns."""
        return self._tenant_by_key.get(key.lower())

    def tenant_by_id(self, tenant_id: str) -> Tenant:
        return self._tenant_by_key[tenant_id.lower()]

    def is_known_authority_tenant(self, key: str) -> bool:
        return key.lower() in META_TENANTS or self.tenant(key) is not None

    def account(self, upn: str) -> Account | None:
        return self._account_by_upn.get(upn.strip().lower())

    def account_by_oid(self, tenant_id: str, object_id: str) -> Account | None:
        return self._account_by_oid.get((tenant_id, object_id))

    def account_by_graph_key(self, key: str) -> Account | None:
        """Graph `/users/{id | userPrincipalName}`."""
        return self._account_by_graph_id.get(key.lower()) or self.account(key)


def sign_in_refusal(directory: Directory, authority_tenant: str, account: Account) -> tuple[int, str] | None:
    """Why this authority's sign-in page refuses the account, as (AADSTS code, message), or None."""
    key = authority_tenant.lower()
    if key == "organizations" and account.kind == "personal":
        return (
            500208,
            "The domain is not a valid login domain for the account type. You can't sign in here with a "
            "personal account. Use your work or school account instead.",
        )
    consumers = key == "consumers" or key == CONSUMERS_TENANT_ID
    if consumers and account.kind == "work":
        return (
            500208,
            "The domain is not a valid login domain for the account type. This endpoint only accepts "
            "personal Microsoft accounts.",
        )
    if key in META_TENANTS or consumers:
        return None
    tenant = directory.tenant(key)
    if tenant is not None and tenant.id != account.tenant_id:
        return (
            50020,
            f"User account '{account.upn}' from identity provider '{account.identity_provider}' does not "
            f"exist in tenant '{tenant.display_name}' and cannot access the application in that tenant. "
            "The account needs to be added as an external user in the tenant first.",
        )
    return None
