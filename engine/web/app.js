// reel's web page: submit a film, watch the queue, follow one job's shots (server-sent events), play the film.
// Plain JS, no build step. Text from the server is always set with textContent (never parsed as HTML).
"use strict";

const $ = (sel) => document.querySelector(sel);
let events = null;      // the EventSource of the selected job
let selected = null;    // its id
let filmSrc = null;     // the film URL the <video> element plays

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) $("#login").hidden = false;
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const err = new Error((body && body.error) || response.statusText);
    err.problems = (body && body.problems) || [];
    throw err;
  }
  return body;
}

function showProblems(list, problems) {
  list.replaceChildren(...problems.map((p) =>
    el("li", {}, p.field ? el("code", { text: p.field }) : "", (p.field ? ": " : "") + p.message)));
}

// ---- submitting --------------------------------------------------------------------------------------
$("#submit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = new URLSearchParams({ priority: $("#priority").value || "0", preview: $("#preview").checked });
  $("#submit").disabled = true;
  try {
    const job = await api(`/api/jobs?${query}`, {
      method: "POST", headers: { "Content-Type": "application/toml" }, body: $("#spec").value,
    });
    showProblems($("#problems"), []);
    selectJob(job.id);
    refreshQueue();
  } catch (err) {
    showProblems($("#problems"), err.problems.length ? err.problems : [{ field: "", message: err.message }]);
  } finally {
    $("#submit").disabled = false;
  }
});

$("#login").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await api("/api/session", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: $("#token").value }),
    });
    $("#login").hidden = true;
    refreshQueue();
  } catch (err) {
    $("#server-state").textContent = err.message;
  }
});

// ---- the queue ---------------------------------------------------------------------------------------
async function refreshQueue() {
  let data;
  try { data = await api("/api/jobs?limit=50"); } catch (_) { return; }
  $("#pause").textContent = data.paused ? "Resume" : "Pause";
  $("#pause").dataset.paused = data.paused;
  $("#queue tbody").replaceChildren(...data.jobs.map((job) => {
    const p = job.progress || {};
    const status = job.status + (job.position ? ` (#${job.position})` : "");
    const row = el("tr", { class: job.id === selected ? "selected" : "", onclick: () => selectJob(job.id) },
      el("td", { text: String(job.id) }), el("td", { text: job.title }), el("td", { text: status, class: job.status }),
      el("td", { text: String(job.priority) }), el("td", { text: `${p.shots_done || 0}/${job.shots.length}` }));
    return row;
  }));
}

$("#pause").addEventListener("click", async () => {
  const paused = $("#pause").dataset.paused === "true";
  await api(paused ? "/api/queue/resume" : "/api/queue/pause", { method: "POST" }).catch(() => {});
  refreshQueue();
});

// ---- one job -----------------------------------------------------------------------------------------
function selectJob(id) {
  if (events) events.close();
  selected = id;
  filmSrc = null;
  const video = $("#film");
  video.hidden = true;
  video.removeAttribute("src");
  $("#film-links").replaceChildren();
  $("#shots").replaceChildren();
  $("#job-panel").hidden = false;
  events = new EventSource(`/api/jobs/${id}/events`);
  events.addEventListener("job", (e) => renderJob(JSON.parse(e.data)));
  events.addEventListener("end", () => { events.close(); refreshQueue(); });
}

function shotRow(job, id, shot) {
  const base = `/api/jobs/${job.id}/shots/${encodeURIComponent(id)}`;
  const done = shot.status === "done" || shot.status === "reused";
  const bar = el("progress", { max: String(shot.total || 1), value: String(done ? (shot.total || 1) : shot.step) });
  const label = shot.status === "rendering" ? `step ${shot.step}/${shot.total}` : shot.status;
  const row = el("div", { class: `shot ${shot.status}`, "data-shot": id },
    el("span", { class: "shot-id", text: id }), bar, el("span", { class: "shot-status", text: label }));
  if (shot.frame > 0) row.append(el("img", { src: `${base}/frame.png?v=${shot.frame}`, alt: `latest frame of ${id}` }));
  if (done) row.append(el("a", { href: base, text: "clip" }));
  return row;
}

function renderJob(job) {
  if (job.id !== selected) return;
  $("#job-title").textContent = `#${job.id} ${job.title}`;
  const p = job.progress || {};
  let status = `${job.status}` + (job.position ? `, #${job.position} in the queue` : "");
  if (job.attempts > 1) status += ` (resumed, attempt ${job.attempts})`;
  status += ` — ${p.shots_done || 0}/${job.shots.length} shots` + (p.message ? ` — ${p.message}` : "");
  $("#job-status").textContent = status;
  $("#job-status").className = job.status;
  $("#cancel").hidden = job.status !== "queued" && job.status !== "running";
  const problems = job.problems.length ? job.problems : (job.error ? [{ field: "", message: job.error }] : []);
  showProblems($("#job-problems"), problems);
  const shots = p.shots || {};
  $("#shots").replaceChildren(...job.shots.map((id) => shotRow(job, id, shots[id] || { status: "waiting", step: 0 })));
  if (job.links.film && filmSrc !== job.links.film) {
    filmSrc = job.links.film;
    const video = $("#film");
    video.src = filmSrc;
    video.hidden = false;
    video.load();
    $("#film-links").replaceChildren(el("a", { href: filmSrc, download: "", text: "download the film" }), " · ",
      el("a", { href: `/api/jobs/${job.id}/files/out/film.json`, text: "manifest" }));
  }
}

$("#cancel").addEventListener("click", () => {
  if (selected !== null) api(`/api/jobs/${selected}/cancel`, { method: "POST" }).catch(() => {});
});

// ---- start -------------------------------------------------------------------------------------------
async function start() {
  try {
    const health = await api("/api/health");
    $("#server-state").textContent = `${health.workers.map((w) => w.device).join(", ")}` +
      (health.paused ? " — paused" : "");
    $("#paths-note").textContent = health.roots.length
      ? `Files a spec names must lie under: ${health.roots.join(", ")} (relative paths start at ` +
        `${health.relative_paths_start_at}).`
      : "This server has no --root: specs may use built-in models only.";
  } catch (_) { /* the login form is shown on 401 */ }
  refreshQueue();
  setInterval(refreshQueue, 2000);
}
start();
