"""HTML of the sign-in/consent page, the error page and the form_post answer.

Plain, script-free pages (except form_post's one nonce'd auto-submit) that a person or a browser
test can drive: the sign-in form (also the admin consent form) has a `login` field and `action=accept|cancel` buttons.
"""

from __future__ import annotations

from html import escape

_STYLE = """
body { font-family: "Segoe UI", system-ui, sans-serif; background: #f2f2f2; margin: 0; }
main { max-width: 440px; margin: 48px auto; background: #fff; padding: 32px 40px;
       box-shadow: 0 2px 6px rgba(0,0,0,.2); }
h1 { font-size: 24px; font-weight: 600; margin: 0 0 12px; }
.banner { font-size: 13px; color: #666; margin-bottom: 20px; }
label { display: block; margin: 16px 0 4px; }
input[type=text] { width: 100%; box-sizing: border-box; padding: 6px; font-size: 15px; }
ul { padding-left: 20px; } li { margin: 6px 0; } code { color: #555; font-size: 12px; }
.error { color: #a80000; margin: 12px 0; }
.buttons { margin-top: 24px; display: flex; gap: 8px; justify-content: flex-end; }
button { padding: 6px 20px; font-size: 15px; }
button[value=accept] { background: #0067b8; color: #fff; border: 1px solid #0067b8; }
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f'<body><main><div class="banner">Microsoft (local simulator)</div>{body}</main></body></html>\n'
    )


def sign_in_page(
    app_name: str, permissions: list[tuple[str, str]], login: str, error: str | None, organization: bool = False
) -> str:
    """The sign-in and consent form; with `organization`, the admin consent form (the same fields)."""
    items = "".join(
        f"<li>{escape(description)} <code>{escape(scope)}</code></li>" for scope, description in permissions
    )
    error_html = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    on_behalf = (
        '<p id="organization"><strong>Consent on behalf of your organization.</strong> Accepting grants these '
        "permissions to the app for everyone in your organization.</p>"
        if organization
        else ""
    )
    body = f"""
<h1>Sign in</h1>
<form method="post" autocomplete="off">
  <label for="login">Email, phone, or Skype</label>
  <input type="text" id="login" name="login" value="{escape(login)}" autofocus>
  {error_html}
  <h2 style="font-size:18px;margin-top:24px">Permissions requested</h2>
  <p><strong id="app-name">{escape(app_name)}</strong> <span>unverified</span></p>
  <p>This app would like to:</p>
  <ul id="permissions">{items}</ul>
  {on_behalf}
  <p style="font-size:12px;color:#666">Accepting these permissions means that you allow this app to use your
  data as specified in their terms of service and privacy statement.</p>
  <div class="buttons">
    <button type="submit" name="action" value="cancel">Cancel</button>
    <button type="submit" name="action" value="accept">Accept</button>
  </div>
</form>"""
    return _page("Sign in to your account", body)


def error_page(code: int, message: str, trace_id: str, correlation_id: str, timestamp: str) -> str:
    body = f"""
<h1>Sorry, but we're having trouble signing you in.</h1>
<p class="error" id="error-code">AADSTS{code}: {escape(message)}</p>
<p style="font-size:12px;color:#666">Request Id: {escape(trace_id)}<br>
Correlation Id: {escape(correlation_id)}<br>Timestamp: {escape(timestamp)}</p>"""
    return _page("Sign in to your account", body)


def form_post_page(action: str, params: dict[str, str], script_nonce: str) -> str:
    fields = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">' for name, value in params.items()
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Working...</title></head><body>'
        f'<form method="POST" name="hiddenform" action="{escape(action)}">{fields}'
        '<noscript><p>Script is disabled. Click Submit to continue.</p><input type="submit" value="Submit">'
        "</noscript></form>"
        f'<script nonce="{escape(script_nonce)}">document.forms[0].submit();</script></body></html>\n'
    )


def signed_out_page() -> str:
    return _page(
        "Signed out", "<h1>You signed out of your account</h1><p>It's a good idea to close all browser windows.</p>"
    )
