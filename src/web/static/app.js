// canaryd web view: keeps a page live and sends its controls. Written for this page only; no
// dependencies. Everything it puts on the page goes in as text (textContent) or as a node the
// server rendered and escaped; the API token stays in this tab (sessionStorage), never in a URL.
"use strict";

(function () {
  const TOKEN_KEY = "canaryd.token";
  // A safety net under the live feed: a refused or broken feed still refreshes the page.
  const POLL_MS = 30000;
  const followed = document.body.dataset.rollout || "";
  let inFlight = false;
  let again = false;

  // Re-reads this page and swaps in its live part. Updates that arrive while a read is in
  // flight are folded into one more read, so a burst costs two requests, not one per update.
  async function refresh() {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    try {
      const resp = await fetch(location.pathname, { cache: "no-store", redirect: "error" });
      if (resp.ok) {
        const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
        const fresh = doc.getElementById("live");
        const live = document.getElementById("live");
        if (fresh && live) {
          live.replaceWith(document.adoptNode(fresh));
          document.body.dataset.refreshed = String(Date.now());
        }
      }
    } catch (e) {
      // The next update or poll tries again.
    }
    inFlight = false;
    if (again) {
      again = false;
      refresh();
    }
  }

  function setFeed(on) {
    const el = document.getElementById("feed");
    if (el) {
      el.textContent = on ? "●" : "○";
      el.title = on ? "live" : "reconnecting";
    }
  }

  function listen() {
    if (!window.EventSource) return;
    const feed = new EventSource("/events");
    feed.addEventListener("open", () => setFeed(true));
    feed.addEventListener("error", () => setFeed(false));
    feed.addEventListener("update", (ev) => {
      if (!followed || ev.data === followed || ev.data === "*") refresh();
    });
  }

  function say(text, kind) {
    const el = document.getElementById("action-status");
    if (el) {
      el.textContent = text;
      el.className = kind || "";
    }
  }

  async function act(button) {
    const tokenField = document.getElementById("token");
    const token = tokenField ? tokenField.value.trim() : "";
    const reasonField = document.getElementById("reason");
    const reason = (reasonField && reasonField.value.trim()) || "from the web view";
    const label = button.textContent;
    const body = { reason: reason };
    if (button.dataset.full === "true") body.full = true;
    const headers = { "Content-Type": "application/json" };
    if (token) headers["Authorization"] = "Bearer " + token;
    button.disabled = true;
    say(label + ": sending…", "");
    try {
      const url = "/api/v1/rollouts/" + encodeURIComponent(followed) + "/" +
        encodeURIComponent(button.dataset.action);
      const resp = await fetch(url, {
        method: "POST",
        headers: headers,
        body: JSON.stringify(body),
        credentials: "omit",
        redirect: "error",
      });
      let answer = {};
      try {
        answer = (await resp.json()) || {};
      } catch (e) {
        answer = {};
      }
      const detail = typeof answer.error === "string" ? answer.error : "";
      if (resp.ok && typeof answer.id === "string" && answer.id !== followed) {
        // Retry answers a new run of the rule: follow it.
        location.assign("/rollouts/" + encodeURIComponent(answer.id));
        return;
      }
      if (resp.ok) {
        say(label + ": accepted", "ok");
      } else {
        say(label + ": refused (" + resp.status + ")" + (detail ? ": " + detail : ""), "bad");
      }
    } catch (e) {
      say(label + ": not sent: " + e, "bad");
    }
    button.disabled = false;
    refresh();
  }

  document.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (button && followed) act(button);
  });

  const form = document.getElementById("controls");
  if (form) form.addEventListener("submit", (ev) => ev.preventDefault());
  const tokenField = document.getElementById("token");
  if (tokenField) {
    tokenField.value = sessionStorage.getItem(TOKEN_KEY) || "";
    tokenField.addEventListener("input", () => {
      if (tokenField.value) sessionStorage.setItem(TOKEN_KEY, tokenField.value);
      else sessionStorage.removeItem(TOKEN_KEY);
    });
  }

  listen();
  setInterval(refresh, POLL_MS);
})();
