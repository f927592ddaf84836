// progress-server status page: makes the server-rendered task table live.
//
// No framework and no build step. The page works without this file (every button is a
// real form); with it, rows update in place from the WebSocket in batch mode, new tasks
// appear at the top, and the same actions go through the REST API. When the socket drops,
// the page says so, reconnects with backoff, resumes with `after_seq` (the server replays
// what was missed) and polls GET /api/progress every 2 s until the socket is back.
//
// Formatting mirrors progress_server/display.py (pinned by tests/unit/test_display.py), so a
// reload never changes how a number reads.
"use strict";

(() => {
  const table = document.getElementById("tasks");
  if (!table) return;

  // Labels and symbols: display.py's STATE_LABELS.
  const STATES = {
    pending: ["Queued", "○"],
    downloading: ["Downloading", "↓"],
    processing: ["Processing", "⚙"],
    completed: ["Completed", "✓"],
    failed: ["Failed", "✕"],
    cancelled: ["Cancelled", "⊘"],
    paused: ["Paused", "‖"],
  };
  const FINAL = new Set(["completed", "failed", "cancelled"]);
  const DASH = "—";
  const POLL_MS = 2000;
  const BATCH_MS = 250;
  const PING_MS = 20000;
  // No frame at all for this long (not even a pong) means the connection is dead.
  const SILENCE_MS = 50000;
  const MAX_BACKOFF_MS = 15000;
  const POLL_CHUNK = 100;

  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const template = document.getElementById("task-template");
  const live = document.getElementById("live");
  const liveText = document.getElementById("live-text");
  const empty = document.getElementById("empty");
  const flash = document.getElementById("flash");
  const addForm = document.getElementById("add-form");
  const addError = document.getElementById("add-error");

  const rows = new Map();
  let lastSeq = Number(table.dataset.seq) || 0;
  let socket = null;
  let attempt = 0;
  let retryTimer = null;
  let pollTimer = null;
  let pingTimer = null;
  let lastFrameAt = 0;
  let ended = false;

  // -- formatting (same rules as display.py) --------------------------------------------

  // Binary units, as the API's size_mb: one unit family for sizes and speeds alike.
  function formatBytes(count) {
    if (count === null || count === undefined) return DASH;
    if (count < 1024) return `${count} B`;
    let value = count / 1024;
    for (const unit of ["KiB", "MiB", "GiB"]) {
      if (value < 1024) return `${value.toFixed(1)} ${unit}`;
      value /= 1024;
    }
    return `${value.toFixed(1)} TiB`;
  }

  function formatSpeed(mbps) {
    if (!mbps || mbps <= 0) return DASH;
    const kib = (mbps * 1e6) / 1024;
    if (kib < 1024) return `${kib.toFixed(0)} KiB/s`;
    return `${(kib / 1024).toFixed(1)} MiB/s`;
  }

  function formatEta(seconds) {
    if (seconds === null || seconds === undefined) return DASH;
    const total = Math.max(0, Math.floor(seconds));
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const secs = String(total % 60).padStart(2, "0");
    if (hours) return `${hours}:${String(minutes).padStart(2, "0")}:${secs}`;
    return `${minutes}:${secs}`;
  }

  function formatPct(pct) {
    return pct === null || pct === undefined ? DASH : `${pct.toFixed(1)} %`;
  }

  function nameFromUrl(url) {
    try {
      const parsed = new URL(url);
      const last = decodeURIComponent(parsed.pathname.split("/").pop() || "");
      return last || parsed.hostname || url;
    } catch {
      return url;
    }
  }

  function hostOf(url) {
    try {
      return new URL(url).hostname;
    } catch {
      return "";
    }
  }

  // -- rows -------------------------------------------------------------------------------

  function field(row, name) {
    return row.el.querySelector(`[data-field="${name}"]`);
  }

  function setText(node, text) {
    if (node && node.textContent !== text) node.textContent = text;
  }

  function adopt(el) {
    const row = {
      id: el.dataset.taskId,
      el,
      state: el.dataset.state,
      progress: null,
      // A split download's parts, [start, end, done] each, from its last progress event.
      segments: null,
      processing: null,
      error: null,
      // The last download.retrying while the task waits to try again.
      retrying: null,
      name: null,
      host: null,
    };
    rows.set(row.id, row);
    return row;
  }

  function createRow(taskId) {
    const el = template.content.querySelector("tbody.task").cloneNode(true);
    const nameId = `name-${taskId}`;
    el.id = `task-${taskId}`;
    el.dataset.taskId = taskId;
    el.querySelector('[data-field="name"]').id = nameId;
    for (const node of el.querySelectorAll("[aria-describedby]")) {
      node.setAttribute("aria-describedby", nameId);
    }
    el.querySelector("progress").setAttribute("aria-labelledby", nameId);
    el.querySelector(".act-file").href = `/api/downloads/${encodeURIComponent(taskId)}/file`;
    for (const form of el.querySelectorAll("form[data-action]")) {
      form.action = `/tasks/${encodeURIComponent(taskId)}/${form.dataset.action}`;
    }
    const head = table.tHead;
    table.insertBefore(el, head ? head.nextSibling : table.firstChild);
    el.classList.add("flash");
    empty.hidden = true;
    const row = adopt(el);
    row.name = "…";
    return row;
  }

  function removeRow(row) {
    rows.delete(row.id);
    row.el.remove();
    empty.hidden = rows.size > 0;
  }

  function render(row) {
    const state = row.state;
    row.el.dataset.state = state;
    const [label, icon] = STATES[state] || [state, "?"];
    const retrying = state === "downloading" ? row.retrying : null;
    setText(field(row, "state"), retrying ? "Retrying" : label);
    setText(field(row, "icon"), icon);
    if (retrying) row.el.dataset.retrying = "";
    else delete row.el.dataset.retrying;
    if (row.name !== null) {
      const name = field(row, "name");
      setText(name, row.name);
      if (name.title !== row.name) name.title = row.name;
    }
    if (row.host !== null) setText(field(row, "host"), row.host);
    if (row.error) {
      let message = row.error.message || "";
      if (retrying) {
        message += ` · attempt ${retrying.attempt} failed, next try in ${retrying.retry_in_seconds} s`;
      }
      setText(field(row, "error-type"), row.error.type || "");
      setText(field(row, "error-message"), message);
    }
    if (row.progress === null && state !== "completed" && state !== "processing") return;

    const p = row.progress || {};
    const bar = row.el.querySelector("progress");
    const downloading = state === "downloading";
    let pct = p.percentage ?? null;
    let eta = downloading ? p.eta_seconds : null;
    if (state === "completed") pct = 100;
    if (state === "processing") {
      pct = row.processing ? (row.processing.percentage ?? null) : null;
      eta = row.processing ? row.processing.eta_seconds : null;
    }
    if (pct === null && (downloading || state === "processing")) {
      bar.removeAttribute("value");
    } else {
      bar.value = pct ?? 0;
    }
    setText(bar, formatPct(pct));
    setText(field(row, "percentage"), formatPct(pct));

    if (row.progress !== null) {
      const total = p.total_bytes ?? null;
      let size = formatBytes(p.downloaded_bytes ?? 0);
      if (total !== null) size = `${size} / ${formatBytes(total)}`;
      if (state === "completed") size = formatBytes(total ?? p.downloaded_bytes ?? 0);
      setText(field(row, "size"), size);
    }
    setText(field(row, "speed"), downloading ? formatSpeed(p.speed_mbps) : DASH);
    setText(field(row, "eta"), formatEta(eta));
    drawSegments(row, downloading ? p.total_bytes : null);
  }

  // The thin multi-part strip under the bar (as aria2's front ends draw it): one part per
  // segment, placed where it lies in the file and filled as far as its connection got.
  function drawSegments(row, total) {
    const strip = field(row, "segments");
    if (!strip) return;
    const parts = total ? row.segments : null;
    if (!parts || parts.length === 0) {
      if (!strip.hidden) strip.hidden = true;
      return;
    }
    while (strip.children.length > parts.length) strip.lastChild.remove();
    while (strip.children.length < parts.length) {
      const part = document.createElement("span");
      part.appendChild(document.createElement("span"));
      strip.appendChild(part);
    }
    parts.forEach(([start, end, done], i) => {
      const part = strip.children[i];
      part.style.left = `${(100 * start) / total}%`;
      part.style.width = `${(100 * (end - start)) / total}%`;
      part.firstChild.style.width = end > start ? `${(100 * done) / (end - start)}%` : "100%";
    });
    strip.hidden = false;
  }

  // A record from the REST API: names, result and error. Its state is applied only when
  // asked, because a record fetched in reaction to an event may already be older than
  // events that arrived while it was in flight.
  function applyRecord(record, withState) {
    let row = rows.get(record.task_id);
    if (!row) row = createRow(record.task_id);
    const produced = record.result && record.result.filename;
    row.name = produced || record.filename || nameFromUrl(record.url);
    row.host = hostOf(record.url);
    if (record.error) row.error = record.error;
    row.el.toggleAttribute("data-playlist", Array.isArray(record.entries));
    if (withState) {
      row.state = record.state;
      if (record.progress) row.progress = record.progress;
      row.segments = record.segments || null;
    }
    render(row);
    return row;
  }

  const fetching = new Set();

  async function refreshRecord(row) {
    if (fetching.has(row.id)) return;
    fetching.add(row.id);
    try {
      const resp = await api("GET", `/api/downloads/${encodeURIComponent(row.id)}`);
      if (resp.ok) applyRecord(await resp.json(), false);
      else if (resp.status === 404 && rows.get(row.id) === row) removeRow(row);
    } catch {
      // The next event or poll brings the row up to date.
    } finally {
      fetching.delete(row.id);
    }
  }

  // -- events -----------------------------------------------------------------------------

  function applyEvent(ev, dirty) {
    if (typeof ev.seq === "number") {
      // seq strictly increases across the server: anything at or below what the page
      // already reflects is a duplicate.
      if (ev.seq <= lastSeq) return;
      lastSeq = ev.seq;
    }
    if (!ev.task_id) return;
    let row = rows.get(ev.task_id);
    const isNew = !row;
    if (!row) row = createRow(ev.task_id);
    if (ev.state) row.state = ev.state;
    if (ev.progress) row.progress = ev.progress;
    // Each progress event says the parts anew; any other event ends what they showed.
    row.segments = ev.event === "download.progress" ? ev.segments || null : null;
    if (ev.event !== "download.retrying") row.retrying = null;
    switch (ev.event) {
      case "download.queued":
        row.error = null;
        row.processing = null;
        break;
      case "download.started":
        // The origin may have named the file: fetch the record for its name.
        refreshRecord(row);
        break;
      case "download.processing":
        if (ev.processing) row.processing = ev.processing;
        break;
      case "download.completed":
        if (ev.result && ev.result.filename) row.name = ev.result.filename;
        if (row.progress && row.progress.total_bytes === null) {
          row.progress = { ...row.progress, total_bytes: row.progress.downloaded_bytes };
        }
        break;
      case "download.retrying":
        // A failed attempt that will be retried; download.error comes only at the end.
        row.retrying = ev;
        if (ev.error) row.error = ev.error;
        break;
      case "download.error":
      case "download.cancelled":
        if (ev.error) row.error = ev.error;
        break;
      default:
        break;
    }
    if (isNew) refreshRecord(row);
    dirty.add(row);
  }

  // Answers to subscribe (and polling) carry a snapshot: state and progress right now.
  function applySnapshot(snap, dirty) {
    if (!snap.task_id || snap.task_id === "*") return;
    let row = rows.get(snap.task_id);
    const isNew = !row;
    if (!row) row = createRow(snap.task_id);
    const before = row.state;
    if (snap.state) row.state = snap.state;
    if (snap.progress) row.progress = snap.progress;
    if (isNew || (before !== row.state && (FINAL.has(row.state) || row.state === "processing"))) {
      // Polling says only state and progress; the record has the error or the result.
      refreshRecord(row);
    }
    dirty.add(row);
  }

  function handleMessage(msg, dirty) {
    switch (msg.event) {
      case "batch":
        for (const inner of msg.events || []) handleMessage(inner, dirty);
        break;
      case "subscribed":
        if (msg.task_id === "*") {
          for (const snap of msg.tasks || []) applySnapshot(snap, dirty);
          wentLive();
        } else {
          applySnapshot(msg, dirty);
        }
        break;
      case "pong":
      case "unsubscribed":
      case "configured":
        break;
      case "error":
        handleSocketError(msg.error || {});
        break;
      default:
        if (typeof msg.event === "string" && msg.event.startsWith("download.")) {
          applyEvent(msg, dirty);
          wentLive();
        }
    }
  }

  function handleSocketError(error) {
    if (error.type === "unauthorized") {
      sessionEnded();
    } else {
      showFlash(`Live updates: ${error.message || error.type || "error"}`);
    }
  }

  // -- connection status ------------------------------------------------------------------

  function setLive(mode, text) {
    live.dataset.mode = mode;
    setText(liveText, text);
    live.title = text;
  }

  function wentLive() {
    if (live.dataset.mode === "live" || ended) return;
    attempt = 0;
    stopPolling();
    setLive("live", "Live");
  }

  function sessionEnded() {
    ended = true;
    stopPolling();
    clearTimeout(retryTimer);
    clearInterval(pingTimer);
    if (socket) socket.close();
    setLive("ended", "Session ended — reload the page to log in again");
  }

  // -- WebSocket --------------------------------------------------------------------------

  function connect() {
    if (ended) return;
    retryTimer = null;
    setLive(
      "connecting",
      attempt ? "Reconnecting · polling every 2 s" : "Connecting…",
    );
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    let sock;
    try {
      sock = new WebSocket(`${scheme}${location.host}/api/progress/ws`);
    } catch {
      lost();
      return;
    }
    socket = sock;
    sock.onopen = () => {
      lastFrameAt = Date.now();
      sock.send(JSON.stringify({ action: "configure", batch_ms: BATCH_MS }));
      sock.send(JSON.stringify({ action: "subscribe", task_id: "*", after_seq: lastSeq }));
    };
    sock.onmessage = (message) => {
      lastFrameAt = Date.now();
      let msg;
      try {
        msg = JSON.parse(message.data);
      } catch {
        return;
      }
      const dirty = new Set();
      handleMessage(msg, dirty);
      for (const row of dirty) if (rows.get(row.id) === row) render(row);
    };
    sock.onclose = () => {
      if (socket !== sock) return;
      socket = null;
      lost();
    };
  }

  function lost() {
    if (ended) return;
    attempt += 1;
    const base = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (attempt - 1));
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    setLive(
      "lost",
      // Most important first: narrow screens cut the end off.
      `Connection lost · polling every 2 s · retry in ${Math.ceil(delay / 1000)} s`,
    );
    startPolling();
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
  }

  function heartbeat() {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    if (Date.now() - lastFrameAt > SILENCE_MS) {
      socket.close();
      return;
    }
    socket.send(JSON.stringify({ action: "ping" }));
  }

  // -- polling fallback -------------------------------------------------------------------

  function startPolling() {
    if (pollTimer || ended) return;
    pollTimer = setInterval(poll, POLL_MS);
    poll();
  }

  function stopPolling() {
    clearInterval(pollTimer);
    pollTimer = null;
  }

  async function poll() {
    const ids = [...rows.values()].filter((r) => !FINAL.has(r.state)).map((r) => r.id);
    if (!ids.length) {
      // Nothing to poll, but still notice when the server is back.
      try {
        if ((await fetch("/healthz", { cache: "no-store" })).ok) reachable();
      } catch {
        unreachable();
      }
      return;
    }
    for (let i = 0; i < ids.length; i += POLL_CHUNK) {
      const chunk = ids.slice(i, i + POLL_CHUNK);
      const query = chunk.map((id) => `task_id=${encodeURIComponent(id)}`).join("&");
      let resp;
      try {
        resp = await api("GET", `/api/progress?${query}`);
      } catch {
        unreachable();
        return;
      }
      if (!pollTimer || !resp.ok) return;
      reachable();
      const body = await resp.json();
      const dirty = new Set();
      for (const snap of body.tasks || []) applySnapshot(snap, dirty);
      for (const id of body.missing || []) {
        const row = rows.get(id);
        // Named in `missing`: deleted (or no longer ours).
        if (row) removeRow(row);
      }
      for (const row of dirty) if (rows.get(row.id) === row) render(row);
    }
  }

  let serverDown = false;

  function unreachable() {
    serverDown = true;
    if (live.dataset.mode === "lost") setLive("lost", "Server unreachable · retrying");
  }

  // The server answered again after it could not be reached (a restart, a network blip):
  // reconnect now rather than at the end of a backoff that grew while it was away. A socket
  // that fails while plain requests work keeps its backoff, so a proxy without WebSocket
  // support is not hammered.
  function reachable() {
    if (!serverDown) return;
    serverDown = false;
    if (!socket && retryTimer) {
      clearTimeout(retryTimer);
      attempt = 0;
      connect();
    }
  }

  // -- REST actions -----------------------------------------------------------------------

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (resp.status === 401) sessionEnded();
    return resp;
  }

  async function errorMessage(resp) {
    try {
      const body = await resp.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch {
      // Not JSON: fall through to the status line.
    }
    return `the server answered ${resp.status}`;
  }

  let flashTimer = null;
  function showFlash(text) {
    flash.textContent = text;
    flash.hidden = false;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => {
      flash.hidden = true;
    }, 8000);
  }

  addForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(addForm);
    const body = { url: String(data.get("url") || "").trim() };
    const filename = String(data.get("filename") || "").trim();
    const preset = String(data.get("preset") || "");
    if (filename) body.filename = filename;
    if (preset) body.post_process = { transcode: preset };
    // A quality is a yt-dlp format selector (the page's options carry them): media.
    const format = String(data.get("format") || "");
    if (format) body.format = format;
    const button = addForm.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      const resp = await api("POST", "/api/downloads", body);
      if (resp.ok) {
        applyRecord(await resp.json(), true);
        addForm.reset();
        addError.hidden = true;
        addForm.querySelector("#add-url").focus();
      } else if (resp.status !== 401) {
        addError.textContent = await errorMessage(resp);
        addError.hidden = false;
      }
    } catch {
      addError.textContent = "Could not reach the server. Try again in a moment.";
      addError.hidden = false;
    } finally {
      button.disabled = false;
    }
  });

  table.addEventListener("submit", async (event) => {
    const form = event.target.closest("form[data-action]");
    if (!form) return;
    event.preventDefault();
    const row = rows.get(form.closest("tbody.task").dataset.taskId);
    if (!row) return;
    const action = form.dataset.action;
    const path = `/api/downloads/${encodeURIComponent(row.id)}`;
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const resp =
        action === "delete" ? await api("DELETE", path) : await api("POST", `${path}/${action}`);
      if (resp.status === 204 || (action === "delete" && resp.status === 404)) {
        removeRow(row);
      } else if (resp.ok) {
        applyRecord(await resp.json(), true);
      } else if (resp.status !== 401) {
        showFlash(`Could not ${action} “${field(row, "name").textContent}”: ${await errorMessage(resp)}`);
      }
    } catch {
      showFlash("Could not reach the server. Try again in a moment.");
    } finally {
      button.disabled = false;
    }
  });

  // -- start ------------------------------------------------------------------------------

  for (const el of table.querySelectorAll("tbody.task")) adopt(el);
  pingTimer = setInterval(heartbeat, PING_MS);
  connect();

  // For tests and for the curious: the live socket and the newest seq the page reflects.
  window.progressPage = {
    get socket() {
      return socket;
    },
    get lastSeq() {
      return lastSeq;
    },
  };
})();
