// The agent inbox's script (no build step): live updates from GET /v1.0/events, resumed with
// Last-Event-ID after a lost connection, and every change made through the public API with the
// session cookie and the CSRF token. HTML comes only from the server's templates (escaped there).
"use strict";

(() => {
  const body = document.body;
  const page = body.dataset.page || "";
  const csrfToken = () => {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  };

  // --- times in the reader's own zone (the server writes UTC) -----------------------------
  const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach((el) => {
      const when = new Date(el.dateTime);
      if (!Number.isNaN(when.getTime())) {
        el.textContent = timeFormat.format(when);
        el.title = el.dateTime;
      }
    });
  }
  localTimes(document);

  // --- fragments ------------------------------------------------------------------------------
  function parse(html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content;
  }

  // Replaces the element with the same id, keeping the keyboard focus and shown errors.
  function swap(fresh) {
    const old = document.getElementById(fresh.id);
    if (!old) return;
    const active = document.activeElement;
    const hadFocus = active && active !== body && old.contains(active);
    const focusId = hadFocus ? active.id : "";
    const section = hadFocus ? active.closest("section[aria-labelledby]") : null;
    const headingId = section ? section.getAttribute("aria-labelledby") : "";
    const twinOf = (el) => fresh.querySelector("#" + CSS.escape(el.id));
    old.querySelectorAll(".error[id]:not([hidden])").forEach((shown) => {
      const twin = twinOf(shown);
      if (twin) showError(twin, shown.textContent);
    });
    // What the user is typing or choosing survives the update.
    old.querySelectorAll("input[id], textarea[id]").forEach((field) => {
      const twin = twinOf(field);
      if (twin && field.value !== field.defaultValue) twin.value = field.value;
    });
    old.querySelectorAll("select[id]").forEach((field) => {
      const twin = twinOf(field);
      const chosen = Array.from(field.options).find((o) => o.selected);
      if (twin && chosen && !chosen.defaultSelected && Array.from(twin.options).some((o) => o.value === field.value)) {
        twin.value = field.value;
      }
    });
    old.replaceWith(fresh);
    localTimes(fresh);
    if (!hadFocus) return;
    const again = focusId && document.getElementById(focusId);
    const target = again || (headingId && document.getElementById(headingId));
    if (target) {
      // A heading takes the focus when the control that had it is gone.
      if (!target.matches("a[href], button, input, select, textarea, [tabindex]")) {
        target.setAttribute("tabindex", "-1");
      }
      target.focus();
    }
  }

  function showError(el, message) {
    if (!el) return;
    el.textContent = message;
    el.hidden = false;
  }
  function hideError(el) {
    if (!el) return;
    el.textContent = "";
    el.hidden = true;
  }

  // One refresh per key at a time; a request while one runs makes it run once more after.
  const running = new Map();
  function coalesce(key, work) {
    if (running.has(key)) {
      running.set(key, true);
      return;
    }
    running.set(key, false);
    (async () => {
      try {
        do {
          running.set(key, false);
          try {
            await work();
          } catch (error) {
            console.warn("inbox refresh failed", key, error);
          }
        } while (running.get(key));
      } finally {
        running.delete(key);
      }
    })();
  }

  async function getFragment(url) {
    const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) setLive("ended");
    return response;
  }

  // --- the public API -------------------------------------------------------------------------
  async function api(method, url, payload, headers) {
    const sent = { "X-CSRFToken": csrfToken(), Accept: "application/json", ...(headers || {}) };
    if (payload !== undefined) sent["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, {
        method,
        headers: sent,
        body: payload === undefined ? undefined : JSON.stringify(payload),
        credentials: "same-origin",
      });
    } catch (error) {
      return { ok: false, message: "The hub could not be reached: check the connection and try again." };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    if (response.ok) return { ok: true, data };
    const message =
      data && data.error && data.error.message
        ? data.error.message
        : `${response.status} ${response.statusText || "error"}`;
    return { ok: false, status: response.status, message };
  }

  function newKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return "inbox-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function payloadOf(form) {
    const kind = form.dataset.kind;
    if (kind === "reply") {
      const text = form.querySelector("#reply-text").value;
      const via = form.querySelector("#reply-via");
      const payload = { text };
      if (via && via.value) payload.participant_id = via.value;
      return payload;
    }
    if (kind === "tags") return { tags: [form.querySelector("#tag-new").value.trim()] };
    if (kind === "assign") return { owner_id: form.querySelector("#assign-agent").value };
    return undefined;
  }

  async function perform(source, payload) {
    if (source.dataset.busy === "true") return;
    source.dataset.busy = "true";
    source.setAttribute("aria-busy", "true");
    const errorOf = () => document.getElementById(source.dataset.error || "");
    const headers = {};
    if (source.dataset.kind === "reply") {
      source.dataset.key = source.dataset.key || newKey();
      headers["Idempotency-Key"] = source.dataset.key;
    }
    try {
      const result = await api(source.dataset.api, source.dataset.url, payload, headers);
      if (!result.ok) {
        showError(errorOf(), result.message);
        return;
      }
      hideError(errorOf());
      if (source.dataset.kind === "reply") {
        source.querySelector("#reply-text").value = "";
        delete source.dataset.key;
        if (result.data && result.data.id) refreshMessage(result.data.id);
      }
      if (source.dataset.kind === "tags") {
        const input = source.querySelector("#tag-new");
        if (input) input.value = "";
      }
      if (page === "conversation") refreshPanels();
    } finally {
      source.dataset.busy = "false";
      source.removeAttribute("aria-busy");
    }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-api]");
    if (!button) return;
    event.preventDefault();
    perform(button, button.dataset.body ? JSON.parse(button.dataset.body) : undefined);
  });
  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-api]");
    if (!form) return;
    event.preventDefault();
    perform(form, payloadOf(form));
  });
  document.addEventListener("input", (event) => {
    // Another text is another message: it gets a key of its own.
    if (event.target.id === "reply-text") delete event.target.form.dataset.key;
  });

  // --- the inbox list -------------------------------------------------------------------------
  const rowsList = document.getElementById("conversations");
  const listQuery = body.dataset.listQuery || "";
  const firstPage = body.dataset.firstPage === "true";

  function updateEmpty(list, emptyId) {
    const empty = document.getElementById(emptyId);
    if (empty && list) empty.hidden = list.children.length > 0;
  }

  function insertOrdered(list, el, attribute, newestFirst) {
    const when = Date.parse(el.getAttribute(attribute)) || 0;
    for (const other of list.children) {
      const otherWhen = Date.parse(other.getAttribute(attribute)) || 0;
      if (newestFirst ? otherWhen < when : otherWhen > when) {
        list.insertBefore(el, other);
        return;
      }
    }
    list.appendChild(el);
  }

  function refreshRow(conversationId) {
    coalesce("row-" + conversationId, async () => {
      const response = await getFragment(`/inbox/rows/${encodeURIComponent(conversationId)}?${listQuery}`);
      const existing = document.getElementById("row-" + conversationId);
      if (response.status === 204) {
        if (existing) existing.remove();
      } else if (response.ok) {
        const fresh = parse(await response.text()).firstElementChild;
        if (!fresh) return;
        localTimes(fresh);
        if (existing && !firstPage) {
          existing.replaceWith(fresh);
        } else if (firstPage) {
          if (existing) existing.remove();
          insertOrdered(rowsList, fresh, "data-activity", true);
        }
      }
      updateEmpty(rowsList, "list-empty");
    });
  }

  // --- the conversation view ------------------------------------------------------------------
  const conversationId = body.dataset.conversationId || "";
  const messageList = document.getElementById("messages");
  const liveAppend = body.dataset.liveAppend === "true";

  function scrollToEnd() {
    if (messageList) messageList.scrollTop = messageList.scrollHeight;
  }
  scrollToEnd();

  function refreshMessage(messageId) {
    coalesce("message-" + messageId, async () => {
      const url = `/inbox/conversations/${encodeURIComponent(conversationId)}/messages/${encodeURIComponent(messageId)}`;
      const response = await getFragment(url);
      const existing = document.getElementById("message-" + messageId);
      if (response.status === 204) {
        if (existing) existing.remove();
      } else if (response.ok) {
        const fresh = parse(await response.text()).firstElementChild;
        if (!fresh) return;
        localTimes(fresh);
        if (existing) {
          existing.replaceWith(fresh);
        } else if (liveAppend) {
          const atEnd = messageList.scrollHeight - messageList.scrollTop - messageList.clientHeight < 40;
          insertOrdered(messageList, fresh, "data-created", false);
          if (atEnd) scrollToEnd();
        }
      }
      updateEmpty(messageList, "messages-empty");
    });
  }

  function refreshPanels() {
    coalesce("panels", async () => {
      const response = await getFragment(`/inbox/conversations/${encodeURIComponent(conversationId)}/panels`);
      if (!response.ok) return;
      const fragment = parse(await response.text());
      for (const fresh of Array.from(fragment.children)) {
        if (fresh.id) swap(fresh);
      }
    });
  }

  // --- the live stream ------------------------------------------------------------------------
  const live = document.getElementById("live-status");
  const LABELS = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    ended: "Session ended: reload the page to log in again",
  };
  function setLive(state) {
    if (!live || live.dataset.state === state) return;
    if (live.dataset.state === "ended") return;
    live.dataset.state = state;
    live.textContent = LABELS[state];
  }

  function conversationOf(type, data) {
    if (type.startsWith("conversation_message")) {
      return data.conversation_id || (data.message && data.message.conversation_id) || "";
    }
    return data.id || "";
  }

  function dispatch(type, payload) {
    const data = (payload && payload.data) || {};
    const target = conversationOf(type, data);
    if (!target) return;
    if (page === "inbox") {
      refreshRow(target);
    } else if (page === "conversation" && target === conversationId) {
      if (type === "conversation_message_received") return; // the same message as _created
      if (type.startsWith("conversation_message")) refreshMessage(data.id);
      refreshPanels();
    }
  }

  let lastEventId = body.dataset.lastEventId || "";
  let retryMs = 1000;
  let failures = 0;

  function handleBlock(block) {
    let id = null;
    let type = "message";
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") id = value;
      else if (field === "event") type = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) retryMs = Number(value);
    }
    if (id !== null) lastEventId = id;
    if (!data.length || id === null) return;
    let payload = null;
    try {
      payload = JSON.parse(data.join("\n"));
    } catch (error) {
      return;
    }
    dispatch(type, payload);
  }

  function reconnect() {
    if (live && live.dataset.state === "ended") return;
    setLive("reconnecting");
    const delay = Math.min(retryMs * 2 ** Math.min(failures, 4), 15000) * (0.75 + Math.random() / 2);
    failures += 1;
    setTimeout(connect, delay);
  }

  async function connect() {
    const headers = { Accept: "text/event-stream" };
    if (lastEventId) headers["Last-Event-ID"] = lastEventId;
    let response;
    try {
      response = await fetch("/v1.0/events", { headers, credentials: "same-origin", cache: "no-store" });
    } catch (error) {
      reconnect();
      return;
    }
    if (response.status === 401) {
      setLive("ended");
      return;
    }
    if (!response.ok || !response.body) {
      reconnect();
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let opened = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        if (!opened) {
          // The server's first bytes (its hello comment) mean the stream is really up.
          opened = true;
          failures = 0;
          setLive("live");
        }
        buffer += value;
        let end;
        while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
          handleBlock(block);
        }
      }
    } catch (error) {
      // the connection broke; resume below
    }
    reconnect();
  }

  if (page === "inbox" || page === "conversation") connect();
})();
