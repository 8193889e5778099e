// The web UI: a chat that streams tokens from POST /v1/chat/completions
// (server-sent events read from a ReadableStream) and a cluster view that
// polls GET /api/cluster every second. No framework, nothing fetched from
// anywhere but this service.
"use strict";

const $ = (id) => document.getElementById(id);
const turns = [];          // {role, content} turns sent with each request
let controller = null;       // the running request's AbortController

// ---- chat ----

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const span = document.createElement("span");
  span.className = "text";
  span.textContent = text;
  div.appendChild(span);
  $("messages").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

// Yields each SSE event's data field from a fetch response body.
async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data) yield data;
    }
  }
}

async function errorText(resp) {
  try {
    const j = await resp.json();
    return (j.error && j.error.message) || JSON.stringify(j);
  } catch (e) {
    return resp.statusText;
  }
}

async function send(text) {
  turns.push({ role: "user", content: text });
  addMessage("user", text);
  const msg = addMessage("assistant", "");
  const span = msg.querySelector(".text");
  msg.classList.add("streaming");
  msg.dataset.pieces = "0";
  controller = new AbortController();
  setBusy(true);
  const t0 = performance.now();
  let tFirst = 0, pieces = 0, finish = "", usage = null;
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        messages: turns,
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: Number($("max-tokens").value) || 128,
        temperature: Number($("temperature").value) || 0,
      }),
      signal: controller.signal,
    });
    if (!resp.ok) throw new Error("HTTP " + resp.status + ": " + (await errorText(resp)));
    for await (const data of sseData(resp.body)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || "error");
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      const piece = choice.delta && choice.delta.content;
      if (piece) {
        if (!tFirst) tFirst = performance.now();
        span.textContent += piece;
        msg.dataset.pieces = String(++pieces);
        msg.scrollIntoView({ block: "end" });
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }
    turns.push({ role: "assistant", content: span.textContent });
  } catch (e) {
    if (e.name === "AbortError") {
      finish = "stopped";
      turns.push({ role: "assistant", content: span.textContent });
    } else {
      msg.classList.add("error");
      span.textContent += (span.textContent ? "\n" : "") + String(e.message || e);
      turns.pop();
    }
  } finally {
    msg.classList.remove("streaming");
    const secs = (performance.now() - t0) / 1000;
    const n = usage ? usage.completion_tokens : pieces;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = n + " tokens in " + secs.toFixed(2) + " s" +
      (tFirst ? ", first after " + ((tFirst - t0) / 1000).toFixed(2) + " s" : "") +
      (finish ? ", " + finish : "");
    msg.appendChild(meta);
    msg.dataset.done = "1";
    controller = null;
    setBusy(false);
  }
}

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) {
    ev.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("clear").addEventListener("click", () => {
  if (controller) return;
  turns.length = 0;
  $("messages").textContent = "";
});

// ---- cluster ----

const palette = ["#2f6fde", "#1f9d55", "#c27c0e", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d"];

function mib(bytes) {
  return bytes == null ? "?" : (bytes / (1 << 20)).toFixed(1) + " MiB";
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

// A place's name says when a spare stands in it: "spare 0 (in place of
// secondary 1)".
function nodeName(n) {
  if (n.role === "starter") return "starter";
  return n.name || n.role + " " + n.index;
}

// One row of the node table (a place of the ring or a spare left), and its
// error below it.
function nodeRow(body, n, cls) {
  const tr = document.createElement("tr");
  tr.className = cls;
  tr.dataset.role = n.role;
  tr.dataset.index = String(n.index);
  if (n.spare != null) tr.dataset.spare = String(n.spare);
  cell(tr, nodeName(n) + (n.role === "spare" && n.used ? " (used, failed)" : ""));
  const addr = cell(tr, n.addr || "");
  if (n.in_place_of) addr.title = "in place of " + n.in_place_of;
  cell(tr, n.layers ? "[" + n.layers[0] + ", " + n.layers[1] + ")" : n.role === "spare" ? "–" : "?", "layers");
  cell(tr, n.state, "state-" + n.state);
  cell(tr, mib(n.rss_bytes), "num");
  cell(tr, (n.tokens_per_s || 0).toFixed(1), "num");
  const busy = cell(tr, "", "num");
  const bar = document.createElement("span");
  bar.className = "bar";
  const fill = document.createElement("span");
  fill.style.width = Math.round(100 * (n.busy || 0)) + "%";
  bar.appendChild(fill);
  busy.append(bar, " " + Math.round(100 * (n.busy || 0)) + "%");
  body.appendChild(tr);
  if (n.error) {
    const er = document.createElement("tr");
    const td = cell(er, n.error, "error");
    td.colSpan = 7;
    body.appendChild(er);
  }
}

function showCluster(c) {
  $("model").textContent = c.model ? c.model + " (" + c.n_layers + " layers)" : "";
  const nodes = c.nodes || [];
  const total = nodes.reduce((s, n) => s + (n.tokens_per_s || 0), 0);
  $("summary").textContent = nodes.length + (nodes.length === 1 ? " node" : " nodes") +
    (c.slots ? ", " + c.slots.busy + " of " + c.slots.n_slots + " slots busy, " + c.slots.queue_depth + " queued" : "") +
    (c.secret ? ", secret set" : "") +
    (c.failovers && c.failovers.count ? ", " + c.failovers.count + (c.failovers.count === 1 ? " failover" : " failovers") +
      " (" + c.failovers.lost_s.toFixed(2) + " s lost)" : "");
  const fo = $("failovers");
  fo.textContent = c.failovers && c.failovers.last ? "Last failover: " + c.failovers.last : "";
  fo.hidden = !fo.textContent;
  const ring = $("ring");
  ring.textContent = "";
  ring.classList.remove("muted");
  nodes.forEach((n, i) => {
    const seg = document.createElement("div");
    seg.className = "seg";
    const span = n.layers ? n.layers[1] - n.layers[0] : 1;
    seg.style.flex = String(Math.max(span, 0.5));
    seg.style.background = palette[i % palette.length];
    seg.textContent = n.layers ? n.layers[0] + "–" + n.layers[1] : "?";
    seg.title = nodeName(n);
    ring.appendChild(seg);
  });
  const body = document.querySelector("#nodes tbody");
  body.textContent = "";
  for (const n of nodes) nodeRow(body, n, n.spare != null ? "node in-place" : "node");
  // The spares standing in no place: what is left to fail over to.
  const spares = c.spares || [];
  if (spares.length) {
    const head = document.createElement("tr");
    head.className = "spares-head";
    const td = cell(head, "spares left to fail over to", "muted small");
    td.colSpan = 7;
    body.appendChild(head);
  }
  for (const n of spares) nodeRow(body, n, "spare");
  document.body.dataset.clusterPolls = String(Number(document.body.dataset.clusterPolls || 0) + 1);
  document.body.dataset.tokensPerS = total.toFixed(1);
}

async function pollCluster() {
  try {
    const resp = await fetch("/api/cluster", { cache: "no-store" });
    if (resp.ok) showCluster(await resp.json());
  } catch (e) {
    $("ring").textContent = "the service does not answer";
    $("ring").classList.add("muted");
  } finally {
    setTimeout(pollCluster, 1000);
  }
}

pollCluster();
$("prompt").focus();
