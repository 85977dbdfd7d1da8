// The Integrations page: Outlook Calendar connections and Upcoming Meetings, on the JSON API only
// (see /api/openapi.json). Plain script, no build step, no third-party code. API data reaches the
// page through textContent and attributes only, never innerHTML.
(function () {
  "use strict";

  // ---- 1. Take what the address bar carries, then clean it before anything else happens: the
  // one-time claim code and the platform token must not linger in history, bookmarks or screenshots.
  const query = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.slice(1));
  const returning = query.has("outlook")
    ? { outcome: query.get("outlook") || "", claim: query.get("claim") || "", reason: query.get("reason") || "" }
    : null;
  if (returning || fragment.has("token")) {
    ["outlook", "claim", "reason"].forEach((k) => query.delete(k));
    const rest = query.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
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
  const UPGRADE_URL = "/upgrade";
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
    return el("a", { class: "button primary", href: UPGRADE_URL, text: "Upgrade your plan" });
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
        [d.message || "You signed in with a different Microsoft account than this connection uses. Nothing was changed."],
        null, true);
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
        if (claimed.data.outcome === "reconnected") {
          notice("success", "Reconnected " + (c.email || "your Outlook account"),
            ["Auto-join is back on for its Teams, Zoom and Google Meet meetings."], null, true);
        } else {
          notice("success", "Connected " + (c.email || "your Outlook account"),
            ["CoAgentor will join its Teams, Zoom and Google Meet meetings. They appear under Upcoming " +
              "Meetings within a few minutes."], null, true);
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
  const DAY = { weekday: "short", day: "numeric", month: "short" };
  const TIME = { hour: "2-digit", minute: "2-digit" };
  const DATE = { day: "numeric", month: "short", year: "numeric" };

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

    const actions = el("div", { class: "actions" });
    const reconnect = () => {
      const b = el("button", { type: "button", class: "button primary reconnect", "aria-label": "Reconnect " + c.email,
        text: "Reconnect" });
      b.addEventListener("click", () => startConnect(c.id, b));
      return b;
    };
    if (!active) {
      if (c.reason) { card.append(el("p", { class: "reason", text: c.reason })); }
      if (c.action === "contact_admin") {
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
    const disconnect = el("button", { type: "button", class: "button disconnect", "aria-label": "Disconnect " + c.email,
      text: "Disconnect" });
    disconnect.addEventListener("click", () => askDisconnect(c, disconnect));
    actions.append(disconnect);
    card.append(actions);
    return card;
  }

  function renderConnections() {
    $("loading").hidden = true;
    $("connections").replaceChildren(...state.connections.map(connectionCard));
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
    const li = el("li", { class: "meeting", "data-meeting-id": m.id });
    const start = formatDate(m.start, TIME);
    const end = formatDate(m.end, TIME);
    li.append(el("div", { class: "when" },
      el("time", { class: "day", datetime: m.start, text: formatDate(m.start, DAY) }),
      el("span", { text: end ? start + " – " + end : start })));
    const what = el("div", { class: "what" }, el("h3", { class: "meeting-title", text: m.title || "(No title)" }));
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
    const labels = { scheduled: "Agent scheduled", deployed: "Agent deployed", failed: "Agent failed",
      recalled: "Agent recalled" };
    const label = labels[m.agent] || (m.will_join === false ? "No agent" : "Agent not scheduled yet");
    agent.append(el("span", { class: "status " + (m.agent || (m.will_join === false ? "skipped" : "pending")),
      text: label }));
    if (m.agent_at && !["deployed", "failed", "recalled"].includes(m.agent)) {
      agent.append(el("span", { class: "muted small", text: "Joins " + formatDate(m.agent_at, TIME) }));
    } else if (m.agent === "failed") {
      agent.append(el("span", { class: "muted small", text: "The agent could not join" }));
    }
    if (m.why_text) { agent.append(el("p", { class: "why small", text: m.why_text })); }
    agent.append(meetingControls(m));
    li.append(agent);
    return li;
  }

  // ---- per-meeting join/skip (PUT meetings/{id}/autojoin), and going back to the rules
  function meetingControls(m) {
    const box = el("div", { class: "meeting-actions" });
    const title = m.title || "this meeting";
    const fixed = m.why === "connection_error" || m.why === "too_late" || m.agent === "deployed" ||
      m.agent === "failed" || m.agent === "recalled";
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

  function choiceButton(m, choice, text, label, kind) {
    const b = el("button", { type: "button", class: "button small-button " + kind, text, "aria-label": label,
      "data-choice": (choice.join === null ? "rules" : choice.join ? "join" : "skip") + (choice.series ? "-series" : "") });
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
    // Keep the keyboard where it was: on the same meeting's first control.
    const item = document.querySelector('li.meeting[data-meeting-id="' + CSS.escape(updated.id) + '"] .meeting-actions button');
    if (item) { item.focus(); }
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
  }

  function rulesFromForm() {
    const form = $("rules-form");
    const picked = (name) => Array.from(form.querySelectorAll('input[name="' + name + '"]:checked')).map((i) => i.value);
    const external = form.querySelector('input[name="external_invites"]:checked');
    return { responses: picked("responses"), external_invites: external ? external.value : "skip_unanswered",
      platforms: picked("platforms") };
  }

  async function saveRules(event) {
    event.preventDefault();
    const button = $("rules-save");
    const status = $("rules-status");
    button.disabled = true;
    status.className = "rules-status";
    status.textContent = "Saving…";
    const res = await api("PUT", "autojoin/rules", rulesFromForm());
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
      status.textContent = "Not saved: " + ((res.data && res.data.message) || "these rules are not valid.");
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

  function renderMeetings() {
    $("meetings").replaceChildren(...state.meetings.map(meetingItem));
    const empty = state.meetings.length === 0;
    $("meetings-empty").hidden = !empty;
    // With calendars connected but nothing listed, the explanation is what the person needs: show it.
    if (empty && state.connections.length > 0) { document.querySelector(".why-missing").open = true; }
    if (empty) {
      $("meetings-empty-text").textContent = state.connections.length === 0
        ? "Connect an Outlook calendar to see its upcoming meetings here."
        : "No upcoming meetings with a Teams, Zoom or Google Meet link. Events without a supported meeting " +
          "link are not listed — see “Why isn't a meeting listed?” below.";
    }
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    $("timezone").textContent = zone ? "Times are in your time zone (" + zone + ")." : "";
  }

  async function refreshAll() {
    const conns = await api("GET", "outlook/connections");
    if (!conns.ok) {
      $("loading").hidden = true;
      if (conns.status === 401) { signedOut(); } else if (conns.status === 0) { unreachable(); } else { explainError(conns, "load"); }
      return false;
    }
    state.signedIn = true;
    state.connections = conns.data.connections || [];
    showAccount(conns.data.account);
    state.plan = conns.data.plan || null;
    state.clientId = (conns.data.app && conns.data.app.client_id) || state.clientId;
    state.adminConsentUrl = (conns.data.app && conns.data.app.admin_consent_url) || state.adminConsentUrl;
    state.adminConsentedAt = (conns.data.app && conns.data.app.admin_consented_at) || null;
    renderConnections();
    await loadMeetings();
    if (state.signedIn) { await loadRules(); }
    return true;
  }

  // ---- tabs (WAI-ARIA tabs pattern, automatic activation)
  function setupTabs() {
    const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
    function select(tab, focus) {
      for (const t of tabs) {
        const on = t === tab;
        t.setAttribute("aria-selected", on ? "true" : "false");
        t.tabIndex = on ? 0 : -1;
        $(t.getAttribute("aria-controls")).hidden = !on;
      }
      if (focus) { tab.focus(); }
    }
    tabs.forEach((tab, i) => {
      tab.addEventListener("click", () => select(tab, false));
      tab.addEventListener("keydown", (e) => {
        let next = null;
        if (e.key === "ArrowRight") { next = tabs[(i + 1) % tabs.length]; }
        if (e.key === "ArrowLeft") { next = tabs[(i - 1 + tabs.length) % tabs.length]; }
        if (e.key === "Home") { next = tabs[0]; }
        if (e.key === "End") { next = tabs[tabs.length - 1]; }
        if (next) { e.preventDefault(); select(next, true); }
      });
    });
  }

  // ---- "sync now": Refresh first asks every Active calendar to be read again (POST .../sync; asking
  // while one is queued queues nothing more), then shows what the reads found.
  const SYNC_SETTLE_MS = 1500;
  async function syncNow() {
    const active = state.connections.filter((c) => c.status === "active");
    if (!active.length) { return; }
    const asked = await Promise.all(active.map(
      (c) => api("POST", "outlook/connections/" + encodeURIComponent(c.id) + "/sync")));
    if (asked.some((r) => r.ok)) {
      $("meetings-status").textContent = "Reading your calendars…";
      await new Promise((resolve) => setTimeout(resolve, SYNC_SETTLE_MS));
    }
  }

  async function main() {
    setupTabs();
    $("connect").addEventListener("click", () => startConnect(null, $("connect")));
    $("refresh").addEventListener("click", async () => {
      const b = $("refresh");
      const shown = document.querySelector("#notice .notice");
      if (shown && !shown.classList.contains("error")) { clearNotice(); } // news, not a problem still to fix
      b.disabled = true;
      try { await syncNow(); await refreshAll(); } finally { b.disabled = false; }
    });
    $("disconnect-dialog").addEventListener("close", onDialogClose);
    $("rules-form").addEventListener("submit", saveRules);
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
    }
    const loaded = await refreshAll();
    loadedOnce = true;
    if (declined) {
      notice("info", "Nothing was connected", ["You chose not to connect that Microsoft account. Its sign-in " +
        "is discarded within 10 minutes."], null, true);
    } else if (returning && (loaded || claimed)) {
      showReturnOutcome(returning, claimed);
    }
  }

  main();
})();
