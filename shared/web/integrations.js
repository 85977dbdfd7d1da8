// The Integrations page: Outlook Calendar connections and Upcoming Meetings, on the JSON API only
// (see /api/openapi.json). Plain script, no build step, no third-party code. API data reaches the
// page through textContent and attributes only, never innerHTML.
(function () {
  "use strict";

  // ---- 1. Take what the address bar carries, then clean it before anything else happens: the
  // one-time claim code and the platform token must not linger in history, bookmarks or screenshots.
  const query = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.slice(1));
  let returning = query.has("outlook")
    ? { outcome: query.get("outlook") || "", claim: query.get("claim") || "", reason: query.get("reason") || "" }
    : null;
  // A sign-in waiting for "Connect?" survives a reload of the page: its claim code stays in this history
  // entry's state (never in the URL) until the person answers, and the page asks again from the preview.
  const keptClaim = history.state && typeof history.state.claim === "string" ? history.state.claim : "";
  if (!returning && keptClaim) {
    returning = { outcome: "confirm", claim: keptClaim, reason: "" };
  }
  if (query.has("outlook") || fragment.has("token")) {
    ["outlook", "claim", "reason"].forEach((k) => query.delete(k));
    const rest = query.toString();
    const pending = returning && returning.outcome === "confirm" && returning.claim ? { claim: returning.claim } : null;
    history.replaceState(pending, "", location.pathname + (rest ? "?" + rest : ""));
  }
  function forgetClaim() {
    if (history.state && history.state.claim) { history.replaceState(null, "", location.pathname + location.search); }
  }
  const TOKEN_KEY = "coagentor_token";
  const meta = (name) => (document.querySelector('meta[name="' + name + '"]') || {}).content || "";
  // Where the platform token may come from. In production only from the CoAgentor web app, by
  // postMessage (below): a token in a link would let anyone plant their own session on a visitor.
  // The local stack alone turns on #token= for convenience (PAGE_TOKEN_FROM_URL, never set in Azure).
  const TOKEN_FROM_URL = meta("coagentor-token-from-url") === "true";
  const WEB_ORIGINS = meta("coagentor-web-origins").split(/\s+/).filter(Boolean);
  if (TOKEN_FROM_URL && fragment.get("token")) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
  }

  // The API lives beside the page: /api/integrations → /api/.
  const API_BASE = location.pathname.replace(/integrations\/?$/, "");
  // Links from settings (UPGRADE_URL, HELP_ARTICLE_URL); empty: the page says it in words, never a dead link.
  const linkSetting = (name) => {
    try {
      const url = new URL(meta(name));
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : "";
    } catch (e) {
      return "";
    }
  };
  const UPGRADE_URL = linkSetting("coagentor-upgrade-url");
  const HELP_URL = linkSetting("coagentor-help-url");
  const PLAN_NAMES = { free: "Free", solo: "Solo", pro: "Pro", business: "Business+" };
  const PLATFORMS = { teams: "Microsoft Teams", zoom: "Zoom", google_meet: "Google Meet" };
  const ADMIN_TODO = "Ask your IT admin to allow CoAgentor's Outlook Calendar app.";

  const $ = (id) => document.getElementById(id);
  const state = { connections: [], plan: null, clientId: "", adminConsentUrl: "", adminConsentedAt: null, meetings: [], signedIn: true,
    rules: null };
  let pendingDisconnect = null;

  // ---- small DOM helpers (text only)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) { continue; }
      if (k === "class") { node.className = v; } else if (k === "text") { node.textContent = v; } else { node.setAttribute(k, v === true ? "" : String(v)); }
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) { continue; }
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function safeHttpsUrl(value) {
    try {
      const url = new URL(value);
      return url.protocol === "https:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  // ---- API
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) { headers.Authorization = "Bearer " + token; }
    if (body !== undefined) { headers["Content-Type"] = "application/json"; }
    let res;
    try {
      res = await fetch(API_BASE + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store", credentials: "omit", redirect: "error",
      });
    } catch (e) {
      return { status: 0, ok: false, data: null };
    }
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch (e) { data = null; }
    }
    return { status: res.status, ok: res.ok, data: data || {} };
  }

  // ---- notices: one at a time, above the cards; focused when it reports the outcome of a round trip
  function notice(kind, title, lines, actions, focus) {
    const region = $("notice");
    const box = el("div", { class: "notice " + kind, tabindex: "-1", role: kind === "error" ? "alert" : null });
    box.append(el("p", { class: "notice-title", text: title }));
    for (const line of lines || []) {
      box.append(typeof line === "string" ? el("p", { text: line }) : line);
    }
    if (actions && actions.length) { box.append(el("div", { class: "notice-actions" }, ...actions)); }
    const dismiss = el("button", { type: "button", class: "button link dismiss", text: "Dismiss" });
    dismiss.addEventListener("click", () => { region.replaceChildren(); $("main").focus(); });
    box.append(dismiss);
    region.replaceChildren(box);
    if (focus) { box.focus(); }
    return box;
  }

  function clearNotice() { $("notice").replaceChildren(); }

  function upgradeLink() {
    if (!UPGRADE_URL) {
      return el("span", { class: "upgrade-words", text: "Upgrade your plan in the CoAgentor app, under your account's plan." });
    }
    return el("a", { class: "button primary", href: UPGRADE_URL, rel: "noopener", text: "Upgrade your plan" });
  }

  function helpLink(text) {
    if (!HELP_URL) { return null; }
    return el("a", { href: HELP_URL, rel: "noopener noreferrer", target: "_blank" }, text,
      el("span", { class: "visually-hidden", text: " (opens in a new tab)" }));
  }

  function connectAgainButton(label) {
    const b = el("button", { type: "button", class: "button primary", text: label || "Connect Outlook Calendar" });
    b.addEventListener("click", () => startConnect(null, b));
    return b;
  }

  function adminConsentParts() {
    if (!state.clientId || !/^https:\/\//.test(state.adminConsentUrl)) { return []; }
    const href = state.adminConsentUrl;
    const link = el("a", { href, rel: "noopener noreferrer", target: "_blank", class: "admin-consent" },
      "Admin consent link for IT", el("span", { class: "visually-hidden", text: " (opens in a new tab)" }));
    return [el("p", {}, "For your IT admin: approve the app for your organisation with the ", link,
      ", and allow app ID ", el("code", { text: state.clientId }),
      " in any conditional access policy that blocks it.")];
  }

  function signedOut() {
    state.signedIn = false;
    state.connections = [];
    state.meetings = [];
    showAccount(null);
    $("loading").hidden = true;
    $("connections").replaceChildren();
    $("no-connections").hidden = true;
    $("connect-area").hidden = true;
    $("plan-limit").hidden = true;
    $("meetings").replaceChildren();
    $("meetings-empty").hidden = true;
    $("rules-section").hidden = true;
    notice("error", "You're not signed in to CoAgentor",
      ["Open Integrations from the CoAgentor app to sign in again, then come back to this page."], null, true);
  }

  function unreachable() {
    const retry = el("button", { type: "button", class: "button", text: "Try again" });
    retry.addEventListener("click", () => { clearNotice(); refreshAll(); });
    notice("error", "CoAgentor could not be reached",
      ["Check your internet connection and try again."], [retry], true);
  }

  // Shared by Connect, Reconnect and the claim: what an error answer means for the person.
  function explainError(res, context) {
    const d = res.data || {};
    if (res.status === 0) { unreachable(); return; }
    if (res.status === 401) { signedOut(); return; }
    if (d.error === "plan_limit") {
      notice("warning", "Your plan's Outlook account limit is reached",
        [d.message || "Upgrade your plan to connect more accounts, or disconnect one first.",
          context === "claim" ? "The Microsoft account you just signed in with was not connected." : ""]
          .filter(Boolean), [upgradeLink()], true);
      refreshAll(); // another tab may have connected one: show the plan as it is now, not as this tab last saw it
      return;
    }
    if (d.error === "claim_mismatch") {
      notice("error", "This sign-in was started from another CoAgentor account",
        ["It was discarded and nothing was connected to your account. If someone sent you a link that " +
          "brought you here, you can ignore it.",
        "To connect your own Outlook calendar, use Connect Outlook Calendar on this page."], null, true);
      return;
    }
    if (res.status === 410 || d.error === "claim_expired") {
      notice("warning", "That sign-in expired",
        ["It was already used or took longer than 10 minutes, so nothing was connected. Please try again."],
        [connectAgainButton("Try again")], true);
      return;
    }
    if (d.error === "account_mismatch") {
      notice("error", "That's a different Microsoft account",
        [d.message || "You signed in with a different Microsoft account than this connection uses. Nothing was changed.",
          "To reconnect, use Reconnect on its card and sign in with that same account. To add another account, " +
          "use Connect Outlook Calendar."], null, true);
      return;
    }
    if (d.error === "not_found") {
      notice("warning", "That Outlook connection no longer exists",
        ["It may have been disconnected in another window. The list below is up to date."], null, true);
      refreshAll();
      return;
    }
    notice("error", "Something went wrong",
      [d.message || "CoAgentor could not complete that. Please try again in a moment."], null, true);
  }

  // ---- connect / reconnect
  async function startConnect(reconnectId, button) {
    if (button) { button.disabled = true; button.setAttribute("aria-busy", "true"); }
    const res = await api("POST", "outlook/connect", reconnectId ? { reconnect: reconnectId } : {});
    const target = res.ok ? safeHttpsUrl(res.data.authorize_url) : null;
    if (target) {
      location.assign(target);
      return;
    }
    if (button) { button.disabled = false; button.removeAttribute("aria-busy"); }
    explainError(res.ok ? { status: 500, data: {} } : res, "connect");
  }

  async function claim(code) {
    notice("info", "Finishing connecting your Outlook calendar…", [], null, false);
    return api("POST", "outlook/claim", { claim: code });
  }

  // ---- the hand-over of the platform token from the CoAgentor web app, which opens this page with
  // window.open: the page says hello (with a one-time nonce) to its opener at each configured origin
  // only, and takes a token only from that opener, at one of those origins, echoing that nonce.
  const NONCE = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  let tokenWaiter = null;
  let loadedOnce = false;  // main() has shown the page once

  function sayHello() {
    if (!window.opener || !WEB_ORIGINS.length) { return false; }
    for (const origin of WEB_ORIGINS) {
      try { window.opener.postMessage({ type: "coagentor-outlook:hello", nonce: NONCE }, origin); } catch (e) { /* gone */ }
    }
    return true;
  }

  function onMessage(event) {
    const d = event.data;
    if (!WEB_ORIGINS.includes(event.origin) || event.source !== window.opener || !d || typeof d !== "object" ||
      d.type !== "coagentor-outlook:token" || d.nonce !== NONCE || typeof d.token !== "string" || !d.token) {
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, d.token);
    if (tokenWaiter) {
      const resolve = tokenWaiter;
      tokenWaiter = null;
      resolve(true);
    } else if (loadedOnce) {
      clearNotice();
      refreshAll();  // a fresh token for an open page (while it starts, main() uses it anyway)
    }
  }

  function tokenHandedOver(ms) {
    return new Promise((resolve) => {
      tokenWaiter = resolve;
      setTimeout(() => { if (tokenWaiter === resolve) { tokenWaiter = null; resolve(false); } }, ms);
    });
  }

  function accountName(account) {
    return (account && (account.email || account.name || account.id)) || "";
  }

  function showAccount(account) {
    const name = accountName(account);
    $("account").hidden = !name;
    $("account-name").textContent = name;
  }

  // Before a claim: say which Microsoft account goes to which CoAgentor account, and let the person
  // refuse (a sign-in someone else arranged never lands silently). Resolves to the claim's answer,
  // or null when they chose not to connect.
  async function confirmAndClaim(code) {
    const preview = await api("GET", "outlook/claim?claim=" + encodeURIComponent(code));
    if (!preview.ok) { return preview; }
    showAccount(preview.data.account);
    $("claim-verb").textContent = preview.data.reconnect ? "Reconnect" : "Connect";
    $("claim-email").textContent = preview.data.email || "";
    $("claim-account").textContent = accountName(preview.data.account);
    const dialog = $("claim-dialog");
    const choice = new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true });
    });
    dialog.returnValue = "";
    dialog.showModal();
    if (await choice !== "confirm") { return null; }
    return claim(code);
  }

  // The reason comes from the page's URL: only a reason code (as the callback writes them) is shown.
  function reasonCode(reason) { return /^[a-z0-9_]{1,64}$/.test(reason || "") ? reason : "sign_in_error"; }

  function showReturnOutcome(ret, claimed) {
    if (claimed) {
      if (claimed.ok) {
        const c = claimed.data.connection || {};
        if (c.status === "error") {
          const verb = claimed.data.outcome === "reconnected" ? "Reconnected " : "Connected ";
          notice("warning", verb + (c.email || "your Outlook account") + ", but its calendar can't be read yet",
            [c.reason || "Microsoft could not give CoAgentor this account's calendar.",
              "No agent joins its meetings until this is fixed. The card below says what to do."], null, true);
        } else if (claimed.data.outcome === "reconnected") {
          notice("success", "Reconnected " + (c.email || "your Outlook account"),
            ["Auto-join is back on for its Teams, Zoom and Google Meet meetings."], null, true);
        } else {
          notice("success", "Connected " + (c.email || "your Outlook account"),
            ["CoAgentor will join its Teams, Zoom and Google Meet meetings. They appear under Upcoming " +
              "Meetings as soon as its calendar has been read."], null, true);
        }
      } else {
        explainError(claimed, "claim");
      }
      return;
    }
    switch (ret.outcome) {
      case "cancelled":
        notice("info", "Sign-in cancelled", ["You cancelled the Microsoft sign-in, so nothing was connected."],
          [connectAgainButton("Try again")], true);
        return;
      case "blocked": {
        const lines = [ret.reason === "admin_approval_required"
          ? "Your organisation requires an administrator to approve CoAgentor's Outlook Calendar app before " +
            "you can connect. Nothing was connected."
          : "Your organisation's sign-in policy (conditional access) does not allow CoAgentor's Outlook " +
            "Calendar app. Nothing was connected."];
        lines.push(el("p", { class: "todo", text: ADMIN_TODO }));
        notice("error", "Blocked by your organisation", lines.concat(adminConsentParts()), null, true);
        return;
      }
      case "admin_consented":
        // Said only when the service recorded an admin's return through this user's link: the page's
        // own URL is anyone's to craft.
        if (state.adminConsentedAt) {
          notice("success", "CoAgentor approved for your organisation",
            ["Thank you. People in your organisation can now connect their Outlook calendars."],
            [connectAgainButton()], true);
        } else {
          notice("info", "No approval recorded",
            ["CoAgentor has no record of an approval through your admin consent link."].concat(adminConsentParts()),
            [connectAgainButton()], true);
        }
        return;
      case "expired":
      case "confirm": // confirm without a claim code: nothing to claim
        explainError({ status: 410, data: {} }, "claim");
        return;
      case "failed":
        notice("error", "Microsoft sign-in did not complete",
          ["Nothing was connected. Please try again; if it keeps happening, contact support and mention " +
            "“" + reasonCode(ret.reason) + "”."], [connectAgainButton("Try again")], true);
        return;
      default:
        notice("error", "Connecting did not complete", ["Nothing was connected. Please try again."],
          [connectAgainButton("Try again")], true);
    }
  }

  // ---- disconnect (in-page confirmation)
  function askDisconnect(connection, button) {
    pendingDisconnect = { connection, button };
    $("disconnect-email").textContent = connection.email;
    $("disconnect-title").textContent = "Disconnect " + connection.email + "?";
    $("disconnect-confirm").disabled = false;
    $("disconnect-dialog").showModal();
  }

  async function onDialogClose() {
    const dialog = $("disconnect-dialog");
    const pending = pendingDisconnect;
    pendingDisconnect = null;
    if (!pending) { return; }
    if (dialog.returnValue !== "confirm") {
      if (pending.button && pending.button.isConnected) { pending.button.focus(); }
      return;
    }
    const { connection } = pending;
    const res = await api("DELETE", "outlook/connections/" + encodeURIComponent(connection.id));
    if (res.status === 204) {
      notice("success", "Disconnected " + connection.email,
        ["CoAgentor no longer reads this calendar. To also remove CoAgentor's access on Microsoft's side, use " +
          "App permissions in your Microsoft account."], null, true);
      await refreshAll();
    } else {
      explainError(res, "disconnect");
    }
  }

  // ---- rendering
  function formatDate(iso, options) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? "" : new Intl.DateTimeFormat(undefined, options).format(d);
  }
  const TIME = { hour: "2-digit", minute: "2-digit" };
  const DATE = { day: "numeric", month: "short", year: "numeric" };
  const LONG_DAY = { weekday: "long", day: "numeric", month: "long" };

  // "Calendar read 2 minutes ago": when a round of reading this account's calendar last completed.
  function syncedText(c) {
    if (!c.last_synced_at) {
      return c.status === "active" ? "Calendar not read yet" : "Calendar not read";
    }
    const at = new Date(c.last_synced_at);
    if (Number.isNaN(at.getTime())) { return ""; }
    const seconds = Math.round((Date.now() - at.getTime()) / 1000);
    let when;
    if (seconds < 45) {
      when = "just now";
    } else if (seconds < 3600) {
      when = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }).format(-Math.round(seconds / 60), "minute");
    } else if (dayKey(at) === dayKey(new Date())) {
      when = "at " + formatDate(c.last_synced_at, TIME);
    } else {
      when = "on " + formatDate(c.last_synced_at, DATE) + " at " + formatDate(c.last_synced_at, TIME);
    }
    const failing = c.sync_failing_since && c.status === "active"
      ? " · reading it has failed since " + formatDate(c.sync_failing_since, TIME) + ", CoAgentor keeps trying" : "";
    return "Calendar last read " + when + failing;
  }

  // Local calendar day of a date, for grouping meetings under Today, Tomorrow, ...
  function dayKey(d) {
    return d.getFullYear() + "-" + (d.getMonth() + 1) + "-" + d.getDate();
  }

  function dayHeading(d) {
    const today = new Date();
    const tomorrow = new Date(today.getFullYear(), today.getMonth(), today.getDate() + 1);
    if (dayKey(d) === dayKey(today)) { return "Today"; }
    if (dayKey(d) === dayKey(tomorrow)) { return "Tomorrow"; }
    return new Intl.DateTimeFormat(undefined, LONG_DAY).format(d);
  }

  function connectionCard(c) {
    const active = c.status === "active";
    const headingId = "conn-" + c.id;
    const card = el("li", { class: "card " + (active ? "active" : "error"), "data-connection-id": c.id,
      "aria-labelledby": headingId });
    card.append(el("div", { class: "card-head" },
      el("h3", { id: headingId, class: "email", text: c.email }),
      el("span", { class: "badge " + (active ? "active" : "error"), text: active ? "Active" : "Error" })));
    const since = c.connected_at ? "Connected " + formatDate(c.connected_at, DATE) + " · " : "";
    card.append(el("p", { class: "muted small", text: since + (active ? "Auto-join on" : "Auto-join paused") }));
    card.append(el("p", { class: "muted small synced", text: syncedText(c) }));

    const actions = el("div", { class: "actions" });
    const reconnect = () => {
      const b = el("button", { type: "button", class: "button primary reconnect", "aria-label": "Reconnect " + c.email,
        text: "Reconnect" });
      b.addEventListener("click", () => startConnect(c.id, b));
      return b;
    };
    if (!active) {
      if (c.reason) { card.append(el("p", { class: "reason", text: c.reason })); }
      if (c.reason_code === "calendar_unavailable") {
        // Not an app approval: the account has no mailbox Graph can read. Approving the app changes nothing.
        card.append(el("p", { class: "todo", text: "Ask your IT admin to move this account's mailbox to Exchange " +
          "Online (a Microsoft 365 licence with Exchange), or connect an account whose calendar is in Microsoft 365. " +
          "Then reconnect." }));
        actions.append(reconnect());
      } else if (c.action === "contact_admin") {
        const todo = (c.reason || "").includes(ADMIN_TODO)
          ? "Once your IT admin has allowed it, reconnect." : ADMIN_TODO + " Then reconnect.";
        card.append(el("p", { class: "todo", text: todo }), ...adminConsentParts());
        actions.append(reconnect());
      } else if (c.action === "reconnect") {
        actions.append(reconnect());
      }
    } else if (c.warning) {
      card.append(el("p", { class: "warning", text: c.warning }));
      actions.append(reconnect());
    }
    if (active) { card.append(calendarChooser(c)); }
    const disconnect = el("button", { type: "button", class: "button disconnect", "aria-label": "Disconnect " + c.email,
      text: "Disconnect" });
    disconnect.addEventListener("click", () => askDisconnect(c, disconnect));
    actions.append(disconnect);
    card.append(actions);
    return card;
  }

  // ---- which of an account's calendars are read, and the agent's name per calendar (loaded when opened)
  function calendarChooser(c) {
    const box = el("details", { class: "calendars", "data-connection": c.id });
    const summary = el("summary", { text: "Calendars" });
    const list = el("ul", { class: "calendar-list", "aria-label": "Calendars of " + c.email });
    const status = el("p", { class: "calendar-status small", role: "status" });
    box.append(summary, list, status);
    box.addEventListener("toggle", () => { if (box.open && !list.childElementCount) { loadCalendars(c, list, status); } });
    return box;
  }

  async function loadCalendars(c, list, status) {
    status.textContent = "Loading calendars…";
    const res = await api("GET", "outlook/connections/" + encodeURIComponent(c.id) + "/calendars");
    if (!res.ok) {
      status.textContent = res.status === 409 ? "Reconnect this account to choose its calendars."
        : "The calendars could not be loaded. Try again in a moment.";
      return;
    }
    status.textContent = "Meetings are read from the ticked calendars. Calendars never count against your plan.";
    list.replaceChildren(...(res.data.calendars || []).map((cal) => calendarRow(c, cal, status)));
  }

  function calendarRow(c, cal, status) {
    const id = "cal-" + c.id + "-" + Math.random().toString(36).slice(2, 8);
    const tick = el("input", { type: "checkbox", id: id + "-on", class: "calendar-selected" });
    tick.checked = !!cal.selected;
    const name = el("input", { type: "text", id: id + "-name", class: "agent-name", maxlength: "64",
      placeholder: "Agent name (optional)", "aria-label": "Agent name for " + cal.name });
    name.value = cal.agent_name || "";
    const save = el("button", { type: "button", class: "button small-button", text: "Save name",
      "aria-label": "Save the agent name for " + cal.name });
    const row = el("li", { class: "calendar", "data-calendar-id": cal.id },
      el("label", { for: id + "-on" }, tick, " " + cal.name + (cal.is_default ? " (default)" : "")),
      el("span", { class: "calendar-name" }, name, save));
    const put = async () => {
      const agentName = name.value.trim();
      tick.disabled = save.disabled = true;
      const res = await api("PUT", "outlook/connections/" + encodeURIComponent(c.id) + "/calendars/" +
        encodeURIComponent(cal.id), { selected: tick.checked, agent_name: agentName || null });
      tick.disabled = save.disabled = false;
      if (res.ok) {
        status.textContent = (res.data.selected ? "Reading " : "Not reading ") + cal.name +
          (res.data.agent_name ? "; the agent joins its meetings as “" + res.data.agent_name + "”." : ".");
        await loadMeetings();
        return;
      }
      tick.checked = !!cal.selected;
      status.textContent = res.data.error === "last_calendar"
        ? "Keep at least one calendar ticked: tick another one first."
        : res.data.error === "invalid_calendar" ? "The agent name must be 1 to 64 printable characters."
          : "That change could not be saved. Try again in a moment.";
    };
    tick.addEventListener("change", async () => { await put(); cal.selected = tick.checked; });
    save.addEventListener("click", put);
    return row;
  }

  function renderConnections() {
    $("loading").hidden = true;
    // A calendar chooser the person has open is kept as it is when the cards are drawn again (a
    // Refresh, the first read after connecting): never closed or reset under their hands.
    const open = new Map([...document.querySelectorAll("#connections details.calendars[open]")]
      .map((box) => [box.dataset.connection, box]));
    $("connections").replaceChildren(...state.connections.map(connectionCard));
    for (const box of document.querySelectorAll("#connections details.calendars")) {
      const kept = open.get(box.dataset.connection);
      if (kept) { box.replaceWith(kept); }
    }
    $("no-connections").hidden = state.connections.length > 0;

    const plan = state.plan || { name: "free", limit: 1, used: state.connections.length };
    const planName = PLAN_NAMES[plan.name] || plan.name;
    const atLimit = plan.limit !== null && plan.used >= plan.limit;
    $("connect-area").hidden = atLimit;
    $("plan-usage").textContent = plan.limit === null
      ? "Unlimited on " + planName
      : plan.used + " of " + plan.limit + " account" + (plan.limit === 1 ? "" : "s") + " on " + planName;
    $("plan-limit").hidden = !atLimit;
    if (atLimit) {
      const allowed = plan.limit + " Outlook account" + (plan.limit === 1 ? "" : "s");
      const have = plan.used === 1 ? "it is connected" : plan.used > plan.limit
        ? "you have " + plan.used + " connected" : "all " + plan.used + " are connected";
      $("plan-limit-text").textContent = "Your " + planName + " plan includes " + allowed + ", and " + have +
        ". To connect another, upgrade your plan or disconnect one.";
    }
  }

  function meetingItem(m) {
    const li = el("li", { class: "meeting", "data-meeting-id": m.id, tabindex: "-1" });
    const start = formatDate(m.start, TIME);
    const end = formatDate(m.end, TIME);
    li.append(el("div", { class: "when" },
      el("time", { class: "start", datetime: m.start, text: start }),
      end ? el("span", { class: "end muted small", text: "– " + end }) : null));
    const what = el("div", { class: "what" }, el("h4", { class: "meeting-title", text: m.title || "(No title)" }));
    const accounts = (m.accounts || []).join(", ");
    const meta = el("p", {}, el("span", { class: "platform", text: PLATFORMS[m.platform] || m.platform }),
      accounts ? " · From " + accounts : "");
    what.append(meta);
    const join = safeHttpsUrl(m.join_url);
    if (join) {
      what.append(el("p", {}, el("a", { href: join, rel: "noopener noreferrer", target: "_blank",
        text: "Join link", "aria-label": "Join link for " + (m.title || "this meeting") + " (opens in a new tab)" })));
    }
    li.append(what);

    const agent = el("div", { class: "agent" });
    const labels = { scheduled: "Agent scheduled", deployed: "Agent deployed", joining: "Agent joining",
      waiting_for_admission: "Agent in the lobby", in_call: "Agent in the call", not_admitted: "Agent not admitted",
      ended: "Agent left", failed: "Agent failed", recalled: "Agent recalled" };
    // A teammate's shared agent (API.md "Teams") joins for this person: shown as theirs, not as a recall.
    const teammate = m.why === "teammate_agent";
    const callingBack = !teammate && isOut(m) && m.will_join === false;
    const label = teammate ? "Teammate's agent" + (m.agent && m.agent !== "scheduled" ? " · " + m.agent.replace(/_/g, " ")
      : " scheduled")
      : callingBack ? "Calling the agent back…"
        : labels[m.agent] || (m.will_join === false ? "No agent" : "Agent not scheduled yet");
    // A meeting the person (or their rules) skipped is a choice, not a failure: shown neutral ("off").
    const kind = teammate ? "teammate" : callingBack ? "recalling" : m.agent || (m.will_join === false ? "off" : "pending");
    agent.append(el("span", { class: "status " + kind, text: label }));
    if (teammate && m.agent_owner) {
      agent.append(el("span", { class: "muted small agent-owner", text: "Sent by " + m.agent_owner }));
    }
    if (m.agent_at && !callingBack && (!m.agent || m.agent === "scheduled")) {
      agent.append(el("span", { class: "muted small", text: "Joins " + formatDate(m.agent_at, TIME) }));
    }
    if (m.agent_attempt > 1 && m.agent_attempts) {
      agent.append(el("span", { class: "muted small attempt", text: "Try " + m.agent_attempt + " of " + m.agent_attempts }));
    }
    const detail = agentDetail(m);
    if (detail) { agent.append(el("p", { class: "agent-detail small", text: detail })); }
    if (m.at_risk && m.at_risk.text) {
      agent.append(el("p", { class: "at-risk small", text: "At risk: " + m.at_risk.text }));
    }
    if (m.why_text) { agent.append(el("p", { class: "why small", text: m.why_text })); }
    agent.append(meetingControls(m));
    li.append(agent);
    return li;
  }

  // An agent that has gone to the meeting (or is on its way in): the one thing left is to call it back.
  const OUT_STATES = ["deployed", "joining", "waiting_for_admission", "in_call"];
  function isOut(m) { return OUT_STATES.includes(m.agent); }

  // What the agent is doing, in the viewer's own time (the API's agent_detail says it in UTC).
  function agentDetail(m) {
    const since = m.agent_since ? formatDate(m.agent_since, TIME) : "";
    if (m.agent === "waiting_for_admission" && since) {
      return "Waiting in the lobby since " + since + " — ask the organiser to admit it";
    }
    if (m.agent === "in_call" && since) { return "In the call since " + since; }
    if (m.agent === "not_admitted" && m.agent_retry_at && m.agent_attempt) {
      const why = (m.agent_detail || "The agent was not let in").split(" — ")[0];
      return why + " — try " + (m.agent_attempt + 1) + " of " + m.agent_attempts + " goes at " +
        formatDate(m.agent_retry_at, TIME);
    }
    if (m.agent === "failed" && !m.agent_detail) { return "The agent could not join"; }
    return m.agent_detail ? m.agent_detail.replace(/ \(Try \d+ of \d+\)$/, "") : "";
  }

  // ---- per-meeting join/skip (PUT meetings/{id}/autojoin), and going back to the rules
  function meetingControls(m) {
    const box = el("div", { class: "meeting-actions" });
    const title = m.title || "this meeting";
    if (isOut(m)) {
      // Skipping a meeting whose agent went recalls it (API.md: skipped → recalled).
      if (m.will_join !== false) {
        box.append(choiceButton(m, { join: false, series: false }, "Call agent back",
          "Call the agent back from " + title, "", "recall"));
      }
      return box;
    }
    // Refused from the lobby or the call is over: nothing left to choose for this meeting.
    const fixed = m.why === "connection_error" || m.why === "too_late" ||
      ["failed", "not_admitted", "ended"].includes(m.agent);
    if (!fixed) {
      const join = !m.will_join;
      box.append(choiceButton(m, { join, series: false }, join ? "Join" : "Skip",
        (join ? "Send the agent to " : "Skip ") + title, join ? "primary" : ""));
      if (m.series) {
        box.append(choiceButton(m, { join, series: true }, join ? "Join series" : "Skip series",
          (join ? "Send the agent to every meeting of the series " : "Skip every meeting of the series ") + title, ""));
      }
    }
    if (m.choice) {
      box.append(choiceButton(m, { join: null, series: !!m.choice.series }, "Use my rules",
        "Let your rules decide for " + (m.choice.series ? "the series " : "") + title, "link"));
    }
    return box;
  }

  function choiceButton(m, choice, text, label, kind, name) {
    const b = el("button", { type: "button", class: "button small-button " + kind, text, "aria-label": label,
      "data-choice": name || (choice.join === null ? "rules" : choice.join ? "join" : "skip") + (choice.series ? "-series" : "") });
    b.addEventListener("click", () => choose(m, choice, b));
    return b;
  }

  async function choose(m, choice, button) {
    button.disabled = true;
    const res = await api("PUT", "meetings/" + encodeURIComponent(m.id) + "/autojoin", choice);
    if (!res.ok) {
      button.disabled = false;
      if (res.data && res.data.error === "not_found") {
        notice("warning", "That meeting is no longer on your calendar",
          ["It may have been cancelled or moved. The list below is up to date."], null, true);
        await loadMeetings();
        return;
      }
      explainError(res, "choice");
      return;
    }
    const updated = res.data;
    if (choice.series) {
      await loadMeetings(); // every occurrence of the series changed
    } else {
      state.meetings = state.meetings.map((x) => (x.id === updated.id ? updated : x));
      renderMeetings();
    }
    $("meetings-status").textContent = (updated.title || "Meeting") + ": " + (updated.why_text || "");
    // Keep the keyboard where it was: on the same meeting (its first control, else the meeting itself).
    const row = () => document.querySelector('li.meeting[data-meeting-id="' + CSS.escape(updated.id) + '"]');
    const focusRow = () => {
      const item = row();
      const control = item && item.querySelector(".meeting-actions button");
      if (control) { control.focus(); } else if (item) { item.focus(); }
    };
    focusRow();
    if (isOut(updated) && updated.will_join === false) {
      await followRecall(updated.id);
      focusRow();
    }
  }

  // The agent is called back in the background (agent-recalls queue): read the meeting again until
  // it says so, for a while; if it takes longer, the next Refresh shows it.
  async function followRecall(id) {
    for (let wait = 500; wait <= 4000; wait *= 2) {
      await new Promise((resolve) => setTimeout(resolve, wait));
      await loadMeetings();
      const m = state.meetings.find((x) => x.id === id);
      if (!m || !isOut(m)) {
        if (m) { $("meetings-status").textContent = (m.title || "Meeting") + ": agent called back."; }
        return;
      }
    }
  }

  // ---- auto-join rules (GET/PUT autojoin/rules)
  function renderRules() {
    const rules = state.rules;
    $("rules-section").hidden = !rules;
    if (!rules) { return; }
    const form = $("rules-form");
    for (const box of form.querySelectorAll('input[name="responses"]')) { box.checked = rules.responses.includes(box.value); }
    for (const box of form.querySelectorAll('input[name="platforms"]')) { box.checked = rules.platforms.includes(box.value); }
    for (const radio of form.querySelectorAll('input[name="external_invites"]')) {
      radio.checked = radio.value === rules.external_invites;
    }
    // Kinds of events: each box stands for the choice that is not the default (join, or skip for free).
    for (const name of KIND_RULES) {
      const box = form.querySelector('input[name="' + name + '"]');
      if (box) { box.checked = rules[name] === box.value; }
    }
    if (typeof rules.join_lead_seconds === "number") { $("rules-lead").value = String(Math.round(rules.join_lead_seconds / 60)); }
    $("rules-agent-name").value = rules.agent_name || "";
  }

  function rulesFromForm() {
    const form = $("rules-form");
    const picked = (name) => Array.from(form.querySelectorAll('input[name="' + name + '"]:checked')).map((i) => i.value);
    const external = form.querySelector('input[name="external_invites"]:checked');
    const rules = { responses: picked("responses"), external_invites: external ? external.value : "skip_unanswered",
      platforms: picked("platforms") };
    for (const name of KIND_RULES) {
      const box = form.querySelector('input[name="' + name + '"]');
      if (box) { rules[name] = box.checked ? box.value : (box.value === "join" ? "skip" : "join"); }
    }
    // The join lead is shown in whole minutes; a stored value in seconds is kept when left as shown.
    const stored = state.rules && state.rules.join_lead_seconds;
    const minutes = $("rules-lead").value.trim();
    if (minutes !== "") {
      const seconds = Number(minutes) * 60;
      rules.join_lead_seconds = typeof stored === "number" && Math.round(stored / 60) === Number(minutes) ? stored
        : (Number.isInteger(seconds) ? seconds : -1);
    }
    const name = $("rules-agent-name").value;
    rules.agent_name = name.trim() ? name : null;
    return rules;
  }
  const KIND_RULES = ["private_events", "solo_events", "all_day_events", "free_events"];

  async function saveRules(event) {
    event.preventDefault();
    const button = $("rules-save");
    const status = $("rules-status");
    button.disabled = true;
    status.className = "rules-status";
    const wanted = rulesFromForm();
    const lead = wanted.join_lead_seconds;
    if (lead !== undefined && !(Number.isInteger(lead) && lead >= 0 && lead <= 900)) {
      button.disabled = false;
      status.className = "rules-status error";
      status.textContent = "Not saved: send the agent a whole number of minutes, from 0 to 15, before the start.";
      return;
    }
    status.textContent = "Saving…";
    const res = await api("PUT", "autojoin/rules", wanted);
    button.disabled = false;
    if (res.ok) {
      state.rules = res.data;
      renderRules();
      status.textContent = "Rules saved. Upcoming Meetings follow them now.";
      await loadMeetings();
      return;
    }
    status.textContent = "";
    if (res.status === 400) {
      status.className = "rules-status error";
      const reasons = res.data && Array.isArray(res.data.reasons) ? res.data.reasons.join("; ") : "";
      status.textContent = "Not saved: " + (reasons || (res.data && res.data.message) || "these rules are not valid.");
      return;
    }
    explainError(res, "rules");
  }

  async function loadMeetings() {
    const meetings = await api("GET", "meetings/upcoming");
    if (meetings.ok) {
      state.meetings = meetings.data.meetings || [];
      renderMeetings();
    } else if (meetings.status === 401) {
      signedOut();
    }
  }

  async function loadRules() {
    const rules = await api("GET", "autojoin/rules");
    if (rules.ok) {
      state.rules = rules.data;
      renderRules();
    } else if (rules.status === 401) {
      signedOut();
    }
  }

  // Upcoming Meetings, one group per local day (Today, Tomorrow, Wednesday 9 December...), in start order.
  function renderMeetings() {
    const groups = [];
    for (const m of state.meetings) {
      const start = new Date(m.start);
      const key = Number.isNaN(start.getTime()) ? "?" : dayKey(start);
      let group = groups.length ? groups[groups.length - 1] : null;
      if (!group || group.key !== key) {
        group = { key, title: key === "?" ? "Date unknown" : dayHeading(start), items: [] };
        groups.push(group);
      }
      group.items.push(meetingItem(m));
    }
    $("meetings").replaceChildren(...groups.map((g, i) => {
      const id = "day-" + i;
      return el("section", { class: "meeting-day", "aria-labelledby": id },
        el("h3", { id, class: "day-title", text: g.title }),
        el("ol", { class: "meetings" }, ...g.items));
    }));
    const empty = state.meetings.length === 0;
    $("meetings-empty").hidden = !empty;
    // With calendars connected but nothing listed, the explanation is what the person needs: show it.
    if (empty && state.connections.length > 0) { document.querySelector(".why-missing").open = true; }
    if (empty) {
      $("meetings-empty-text").textContent = state.connections.length === 0
        ? "Connect an Outlook calendar to see its upcoming meetings here."
        : "No upcoming meetings with a Teams, Zoom or Google Meet link. Events without a supported meeting " +
          "link are not listed — see “Why isn't my meeting here?” below.";
    }
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    $("timezone").textContent = zone ? "Times are in your time zone (" + zone + ")." : "";
  }

  function applyConnections(data) {
    state.connections = data.connections || [];
    showAccount(data.account);
    state.plan = data.plan || null;
    state.clientId = (data.app && data.app.client_id) || state.clientId;
    state.adminConsentUrl = (data.app && data.app.admin_consent_url) || state.adminConsentUrl;
    state.adminConsentedAt = (data.app && data.app.admin_consented_at) || null;
  }

  // ---- "Why isn't my meeting here?" (GET meetings/unlisted): the next 7 days' events left out of
  // Upcoming Meetings, each with its reason; read when the panel opens and on each search.
  async function lookUpUnlisted(event) {
    if (event) { event.preventDefault(); }
    const q = $("unlisted-q").value.trim();
    const status = $("unlisted-status");
    const button = $("unlisted-go");
    button.disabled = true;
    status.textContent = "Looking at your calendars…";
    const res = await api("GET", "meetings/unlisted" + (q ? "?q=" + encodeURIComponent(q) : ""));
    button.disabled = false;
    if (!res.ok) {
      $("unlisted").replaceChildren();
      if (res.status === 401) { signedOut(); return; }
      status.textContent = res.status === 400 && res.data.message ? res.data.message
        : "Your calendars could not be read just now. Try again in a minute.";
      return;
    }
    const events = res.data.events || [];
    $("unlisted").replaceChildren(...events.map((e) => el("li", { class: "unlisted-item" },
      el("p", { class: "meeting-title", text: e.title }),
      el("p", { class: "muted small", text: formatDate(e.start, { weekday: "short", day: "numeric", month: "short",
        hour: "2-digit", minute: "2-digit" }) + " · " + (e.accounts || []).join(", ") }),
      el("p", { class: "unlisted-reason", text: e.reason_text }))));
    const unread = res.data.unread_accounts || [];
    const found = events.length
      ? events.length + (events.length === 1 ? " event" : " events") + " of the next 7 days " +
        (events.length === 1 ? "is" : "are") + " not in Upcoming Meetings" + (q ? " (matching “" + q + "”)" : "") + "."
      : (q ? "No event of the next 7 days matching “" + q + "” is left out of Upcoming Meetings."
        : "Every event of the next 7 days with a meeting link is in Upcoming Meetings.");
    status.textContent = found + (unread.length ? " Not read just now: " + unread.join(", ") + "." : "");
  }

  async function refreshAll() {
    const conns = await api("GET", "outlook/connections");
    if (!conns.ok) {
      $("loading").hidden = true;
      if (conns.status === 401) { signedOut(); } else if (conns.status === 0) { unreachable(); } else { explainError(conns, "load"); }
      return false;
    }
    state.signedIn = true;
    applyConnections(conns.data);
    renderConnections();
    await loadMeetings();
    if (state.signedIn) { await loadRules(); }
    return true;
  }

  // ---- "sync now": Refresh asks every Active calendar to be read again (POST .../sync; asking while
  // one is queued queues nothing more), then watches each connection's last_synced_at move on (a read
  // completed) or sync_failing_since appear (it failed), and says which. A read still not done after
  // SYNC_WAIT_MS is reported as such: the service keeps going, the next Refresh shows the outcome.
  const SYNC_WAIT_MS = 20000;
  const later = (iso, than) => !!iso && (!than || new Date(iso).getTime() > new Date(than).getTime());

  function syncStatus(kind, text) {
    const box = $("sync-status");
    box.className = "sync-status " + kind;
    box.textContent = text;
  }

  async function syncNow() {
    const active = state.connections.filter((c) => c.status === "active");
    if (!active.length) {
      const inError = state.connections.length > 0;
      syncStatus(inError ? "failed" : "idle", inError
        ? "No calendar can be read until its connection is fixed (see its card)."
        : "Connect an Outlook calendar first.");
      return;
    }
    syncStatus("busy", "Reading your calendars…");
    const before = new Map(active.map((c) => [c.id, c]));
    const asked = await Promise.all(active.map(
      (c) => api("POST", "outlook/connections/" + encodeURIComponent(c.id) + "/sync").then((r) => ({ c, r }))));
    if (asked.some(({ r }) => r.status === 401)) { signedOut(); return; }
    if (asked.every(({ r }) => r.status === 0)) { syncStatus("failed", "CoAgentor could not be reached. Try again."); return; }
    const done = new Map();  // connection id → "ok" | "failed" | "gone"
    for (const { c, r } of asked) {
      if (!r.ok) { done.set(c.id, r.status === 404 ? "gone" : "failed"); }
    }
    await watchReads(asked, before, done);
  }

  // Waits (up to SYNC_WAIT_MS) for each asked connection's read to complete or fail, then says how it went.
  async function watchReads(asked, before, done) {
    const deadline = Date.now() + SYNC_WAIT_MS;
    let wait = 400;
    while (done.size < asked.length && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 1.5, 2000);
      const conns = await api("GET", "outlook/connections");
      if (conns.status === 401) { signedOut(); return; }
      if (!conns.ok) { continue; }
      applyConnections(conns.data);
      renderConnections();
      for (const { c } of asked) {
        if (done.has(c.id)) { continue; }
        const now = state.connections.find((x) => x.id === c.id);
        const was = before.get(c.id);
        if (!now) {
          done.set(c.id, "gone");
        } else if (now.status !== "active") {
          done.set(c.id, "failed");
        } else if (later(now.last_synced_at, was.last_synced_at)) {
          done.set(c.id, "ok");
        } else if (now.sync_failing_since && !was.sync_failing_since) {
          done.set(c.id, "failed");
        }
      }
    }
    renderConnections();
    const emails = (outcome) => asked.filter(({ c }) => done.get(c.id) === outcome).map(({ c }) => c.email);
    const failed = emails("failed");
    const pending = asked.filter(({ c }) => !done.has(c.id));
    const stillFailing = pending.filter(({ c }) => {
      const now = state.connections.find((x) => x.id === c.id);
      return now && now.sync_failing_since;
    }).map(({ c }) => c.email);
    const read = emails("ok");
    const time = formatDate(new Date().toISOString(), TIME);
    if (failed.length || stillFailing.length) {
      syncStatus("failed", "Couldn't read " + failed.concat(stillFailing).join(", ") + " just now: Microsoft " +
        "didn't answer. CoAgentor keeps trying by itself; agents may join late until it can read again.");
    } else if (pending.length) {
      syncStatus("busy", "Still reading " + pending.map(({ c }) => c.email).join(", ") +
        ". New meetings appear here when it's done; press Refresh again in a minute.");
    } else if (read.length) {
      syncStatus("ok", "Up to date: " + (read.length === 1 ? "calendar" : read.length + " calendars") +
        " read at " + time + ".");
    } else {
      syncStatus("idle", "");
    }
  }

  // Right after connecting: the first read of the new calendar is under way (queued by the claim).
  // Follow it, so its meetings appear without the person having to press Refresh.
  async function followFirstRead(c) {
    if (!c || !c.id || c.status !== "active" || c.last_synced_at) { return; }
    syncStatus("busy", "Reading " + c.email + "'s calendar for the first time…");
    await watchReads([{ c }], new Map([[c.id, c]]), new Map());
    if (state.signedIn) { await loadMeetings(); }
    $("meetings-status").textContent = $("sync-status").textContent;
  }

  async function main() {
    $("plan-limit-upgrade").replaceChildren(upgradeLink());
    const help = helpLink("Read the Outlook Calendar help article");
    if (help) { $("help-link-slot").replaceChildren(" ", help, "."); }
    $("connect").addEventListener("click", () => startConnect(null, $("connect")));
    $("refresh").addEventListener("click", async () => {
      const b = $("refresh");
      const shown = document.querySelector("#notice .notice");
      if (shown && !shown.classList.contains("error")) { clearNotice(); } // news, not a problem still to fix
      b.disabled = true;
      b.setAttribute("aria-busy", "true");
      try {
        await syncNow();
        if (state.signedIn) { await refreshAll(); }
      } finally {
        b.disabled = false;
        b.removeAttribute("aria-busy");
      }
      // Screen readers hear the outcome, not "Reading your calendars…" forever.
      $("meetings-status").textContent = $("sync-status").textContent;
    });
    // Back from Microsoft's sign-in (or any page) out of the back/forward cache, the page is as it was
    // left: buttons disabled mid-navigation, and the accounts and plan as they were then. Undo the
    // former, read the latter again.
    window.addEventListener("pageshow", (event) => {
      if (!event.persisted) { return; }
      for (const b of document.querySelectorAll("button[aria-busy]")) {
        b.disabled = false;
        b.removeAttribute("aria-busy");
      }
      if (state.signedIn && loadedOnce) { refreshAll(); }
    });
    // A tab left open elsewhere shows what it read then: read again when it is looked at.
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && state.signedIn && loadedOnce) { refreshAll(); }
    });
    $("disconnect-dialog").addEventListener("close", onDialogClose);
    $("rules-form").addEventListener("submit", saveRules);
    $("unlisted-form").addEventListener("submit", lookUpUnlisted);
    $("why-missing").addEventListener("toggle", () => { if ($("why-missing").open && state.signedIn) { lookUpUnlisted(); } });
    window.addEventListener("message", onMessage);
    const askedOpener = sayHello();
    if (TOKEN_FROM_URL) {
      // Local stack only: a fresh token for an open page can come as #token=... too.
      window.addEventListener("hashchange", () => {
        const fresh = new URLSearchParams(location.hash.slice(1)).get("token");
        if (!fresh) { return; }
        history.replaceState(null, "", location.pathname + location.search);
        sessionStorage.setItem(TOKEN_KEY, fresh);
        clearNotice();
        refreshAll();
      });
    }

    if (!sessionStorage.getItem(TOKEN_KEY) && !(askedOpener && await tokenHandedOver(3000))) {
      signedOut();
      loadedOnce = true;  // a token the web app sends later signs the page in
      return;
    }
    let claimed = null;
    let declined = false;
    if (returning && returning.outcome === "confirm" && returning.claim) {
      claimed = await confirmAndClaim(returning.claim);
      declined = claimed === null;
      forgetClaim();  // answered (or unusable): a reload from here on does not ask again
    }
    const loaded = await refreshAll();
    loadedOnce = true;
    if (declined) {
      notice("info", "Nothing was connected", ["You chose not to connect that Microsoft account. Its sign-in " +
        "is discarded within 10 minutes."], null, true);
    } else if (returning && (loaded || claimed)) {
      showReturnOutcome(returning, claimed);
      if (claimed && claimed.ok) { await followFirstRead(claimed.data.connection); }
    }
  }

  main();
})();
