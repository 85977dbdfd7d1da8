// Minimal page: token from the URL fragment (#token=...), claim after the OAuth round trip.
(function () {
  "use strict";
  const frag = new URLSearchParams(location.hash.slice(1));
  if (frag.get("token")) { sessionStorage.setItem("coagentor_token", frag.get("token")); }
  const token = sessionStorage.getItem("coagentor_token") || "";
  const api = (path, opts = {}) => fetch("/api/" + path, {
    ...opts, headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
  });
  const status = document.getElementById("status");

  async function load() {
    const res = await api("outlook/connections");
    if (!res.ok) { status.textContent = "Sign in to CoAgentor first."; return; }
    const data = await res.json();
    const box = document.getElementById("connections");
    box.replaceChildren(...data.connections.map((c) => {
      const card = document.createElement("div");
      card.className = "card";
      const badge = document.createElement("span");
      badge.className = "badge " + c.status;
      badge.textContent = c.status === "active" ? "Active" : "Error";
      card.append(c.email + " ", badge);
      if (c.reason) { const p = document.createElement("p"); p.textContent = c.reason; card.append(p); }
      return card;
    }));
    const mres = await api("meetings/upcoming");
    if (mres.ok) {
      const m = await mres.json();
      document.getElementById("meetings").replaceChildren(...m.meetings.map((x) => {
        const li = document.createElement("li");
        li.textContent = `${new Date(x.start).toLocaleString()} — ${x.title} (${x.platform})`;
        return li;
      }));
    }
  }

  async function claimIfReturning() {
    const q = new URLSearchParams(location.search);
    const outcome = q.get("outlook");
    if (!outcome) { return; }
    history.replaceState(null, "", location.pathname);
    if (outcome === "confirm") {
      const res = await api("outlook/claim", { method: "POST", body: JSON.stringify({ claim: q.get("claim") }) });
      const body = await res.json();
      status.textContent = res.ok ? "Outlook calendar " + body.outcome + "." : body.message;
    } else {
      status.textContent = "Outlook connection " + outcome + " (" + (q.get("reason") || "") + ").";
    }
  }

  document.getElementById("connect").addEventListener("click", async () => {
    const res = await api("outlook/connect", { method: "POST", body: "{}" });
    const body = await res.json();
    if (res.ok) { location.assign(body.authorize_url); } else { status.textContent = body.message; }
  });
  claimIfReturning().then(load);
})();
