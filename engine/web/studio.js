// reel studio: open a film spec, edit its shots (storyboard), render takes and pick one. The timeline and
// characters live in studio_timeline.js. Plain JS, standard APIs only; server text is set with textContent.
"use strict";

const $ = (sel) => document.querySelector(sel);
const S = { path: null, project: null, shot: null, lastPrompt: null, streams: new Map() };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options };
  if (options.json !== undefined) {
    init.body = JSON.stringify(options.json);
    init.headers = { "Content-Type": "application/json" };
  }
  const response = await fetch(path, init);
  if (response.status === 401) $("#login").hidden = false;
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (response.status === 409 && body && body.text !== undefined) return showConflict(body);
  if (!response.ok) {
    const err = new Error((body && body.error) || response.statusText);
    err.problems = (body && body.problems) || [];
    say(err.message);
    throw err;
  }
  return body;
}

function say(text) { $("#state").textContent = text; }
const q = (path) => `path=${encodeURIComponent(path)}`;

// ---- projects, saving and conflicts ------------------------------------------------------------------
async function loadProjects() {
  const list = await api("/api/studio/projects");
  $("#project").replaceChildren(...list.projects.map((p) => el("option", { value: p.path, text: `${p.title} (${p.name})` })));
  $("#audio-file").replaceChildren(...list.audio.map((a) => el("option", { value: a, text: a.split("/").pop() })));
}

async function openProject(path) {
  S.path = path;
  show(await api(`/api/studio/project?${q(path)}`));
}

function show(project) {
  if (!project) return;
  S.project = project;
  $("#conflict").hidden = true;
  $("#spec-text").value = project.text;
  say(`${project.title} — ${project.shots.length} shots, ${project.duration}s` +
      (project.valid ? "" : `, ${project.problems.length} problem(s)`));
  renderCards();
  if (window.renderTimeline) window.renderTimeline(project);
  if (window.renderCharacters) window.renderCharacters(project);
  if (S.shot) loadTakes(S.shot);
}

function showConflict(body) {
  $("#conflict").hidden = false;
  S.conflict = body;
  say("conflict: the file changed on disk");
  return null;
}

async function edit(change) {
  return show(await api(`/api/studio/edit?${q(S.path)}`, { method: "POST", json: { etag: S.project.etag, ...change } }));
}

async function save(text, etag) {
  return show(await api(`/api/studio/project?${q(S.path)}`, { method: "PUT", json: { text, etag } }));
}

// ---- storyboard --------------------------------------------------------------------------------------
function problemsOf(shotId, key) {
  return S.project.problems.filter((p) => p.shot === shotId && (key === undefined || p.key === key));
}

function card(shot, index) {
  const prompt = el("textarea", { class: "prompt", rows: 3, "aria-label": `prompt of shot ${shot.id}` });
  prompt.value = shot.prompt;
  prompt.addEventListener("focus", () => { S.lastPrompt = { shot: shot.id, node: prompt }; });
  prompt.addEventListener("change", () => edit({ op: "set_shot", shot: shot.id, field: "prompt", value: prompt.value }));
  const bad = problemsOf(shot.id);
  if (bad.some((p) => p.key === "prompt")) prompt.setAttribute("aria-invalid", "true");
  const thumb = shot.thumbnail ? el("img", { src: `${shot.thumbnail}?v=${shot.job}`, alt: `frame of shot ${shot.id}` })
    : el("div", { class: "no-thumb", text: "no render yet" });
  const node = el("li", { class: `card ${shot.status.replace(" ", "-")}`, draggable: "true", tabindex: "0",
                          "data-shot": shot.id, "aria-label": `shot ${index + 1}: ${shot.id}` },
    thumb,
    el("h3", { text: shot.id }),
    el("label", {}, "Prompt", prompt),
    el("dl", {},
      el("dt", { text: "characters" }), el("dd", { text: shot.characters.join(", ") || "—" }),
      el("dt", { text: "seed" }), el("dd", { class: "seed", text: `${shot.seed_text ?? "—"}${shot.seed_locked ? " (locked)" : ""}` }),
      el("dt", { text: "duration" }), el("dd", { text: shot.duration === null ? "—" : `${shot.duration}s (${shot.frames} frames)` }),
      el("dt", { text: "status" }), el("dd", { class: "status", text: shot.status })),
    el("ul", { class: "problems" }, ...bad.map((p) => el("li", {}, el("code", { text: p.key }), `: ${p.message}`))),
    el("div", { class: "actions" },
      el("button", { type: "button", class: "preview", text: "Preview", onclick: () => renderTakes(shot.id, 1, false) }),
      el("button", { type: "button", class: "open-takes", text: "Takes", onclick: () => { S.shot = shot.id; view("takes"); loadTakes(shot.id); } }),
      el("button", { type: "button", class: "final", text: "Final", onclick: () => renderTakes(shot.id, 1, true) }),
      el("button", { type: "button", class: "remove", text: "Remove", "aria-label": `remove shot ${shot.id}`,
                     onclick: () => edit({ op: "remove_shot", shot: shot.id }) })));
  node.addEventListener("dragstart", (e) => { e.dataTransfer.setData("text/plain", shot.id); });
  node.addEventListener("dragover", (e) => e.preventDefault());
  node.addEventListener("drop", (e) => {
    e.preventDefault();
    const moved = e.dataTransfer.getData("text/plain");
    if (moved && moved !== shot.id) edit({ op: "move_shot", shot: moved, to: index });
  });
  node.addEventListener("keydown", async (e) => {
    if (!e.altKey || (e.key !== "ArrowUp" && e.key !== "ArrowDown") || e.target !== node) return;
    e.preventDefault();
    await edit({ op: "move_shot", shot: shot.id, to: Math.max(0, index + (e.key === "ArrowUp" ? -1 : 1)) });
    const again = document.querySelector(`.card[data-shot="${CSS.escape(shot.id)}"]`);
    if (again) again.focus();
  });
  return node;
}

function renderCards() {
  $("#cards").replaceChildren(...S.project.shots.map(card));
  const general = S.project.problems.filter((p) => !p.shot);
  $("#problems").replaceChildren(...general.map((p) => el("li", {}, el("code", { text: p.field || "spec" }), `: ${p.message}`)));
}

// ---- takes and live progress -------------------------------------------------------------------------
async function renderTakes(shotId, n, final) {
  S.shot = shotId;
  const record = await api(`/api/studio/takes?${q(S.path)}&shot=${encodeURIComponent(shotId)}&n=${n}&final=${final}`,
                           { method: "POST" });
  follow(record);
  showTakes(record);
}

function follow(record) {
  for (const t of record.takes) {
    if (t.status !== "queued" && t.status !== "running") continue;
    if (S.streams.has(t.job)) continue;
    const events = new EventSource(t.events_url);
    S.streams.set(t.job, events);
    events.addEventListener("job", (e) => progress(record.shot, t, JSON.parse(e.data)));
    events.addEventListener("end", () => { events.close(); S.streams.delete(t.job); refresh(); });
  }
}

function progress(shotId, take, job) {
  const p = (job.progress.shots || {})[shotId] || {};
  const text = `${job.status}${p.total ? ` — step ${p.step}/${p.total}` : ""}`;
  const cardNode = document.querySelector(`.card[data-shot="${CSS.escape(shotId)}"]`);
  if (cardNode) {
    cardNode.querySelector(".status").textContent = text;
    if (p.frame > 0) {
      let img = cardNode.querySelector("img.live");
      if (!img) {
        img = el("img", { class: "live", alt: `decoding frame of shot ${shotId}` });
        cardNode.firstChild.replaceWith(img);
      }
      img.src = `${take.frame_url}?f=${p.frame}`;
    }
  }
  const cell = document.querySelector(`.take[data-take="${take.kind}-${take.take}"] .take-status`);
  if (cell) cell.textContent = text;
}

async function refresh() {
  if (!S.path) return;
  show(await api(`/api/studio/project?${q(S.path)}`));
}

async function loadTakes(shotId) {
  showTakes(await api(`/api/studio/takes?${q(S.path)}&shot=${encodeURIComponent(shotId)}`));
}

function showTakes(record) {
  $("#takes-title").textContent = `Takes of ${record.shot}` +
    (record.picked ? ` — picked take ${record.picked.take} (seed ${(record.takes.find((t) => t.take === record.picked.take) || {}).seed_text})` : "");
  follow(record);
  $("#take-grid").replaceChildren(...record.takes.map((t) => el("figure", { class: "take", "data-take": `${t.kind}-${t.take}` },
    t.clip_url ? el("video", { src: t.clip_url, muted: true, loop: true, playsinline: true, preload: "auto",
                               "aria-label": `take ${t.take} (${t.kind})` })
      : el("img", { src: t.frame_url, alt: `take ${t.take} rendering`, onerror: (e) => { e.target.hidden = true; } }),
    el("figcaption", {}, `take ${t.take} · ${t.kind} · seed ${t.seed_text} · `, el("span", { class: "take-status", text: t.status }), " ",
      el("button", { type: "button", class: "pick", text: "Pick", disabled: t.status !== "completed",
                     "aria-label": `pick take ${t.take}`, onclick: () => pick(record.shot, t.take) })))));
}

async function pick(shotId, take) {
  const project = await api(`/api/studio/pick?${q(S.path)}`, { method: "POST", json: { etag: S.project.etag, shot: shotId, take } });
  show(project);
  if (project) say(`picked take ${take} of ${shotId}`);
}

// ---- views and wiring --------------------------------------------------------------------------------
function view(name) {
  for (const b of document.querySelectorAll("nav button")) b.setAttribute("aria-pressed", String(b.dataset.view === name));
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== name;
}

document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => view(b.dataset.view)));
$("#open").addEventListener("click", () => openProject($("#project").value));
$("#add-shot").addEventListener("click", () => edit({ op: "add_shot" }));
$("#save").addEventListener("click", () => save($("#spec-text").value, S.project ? S.project.etag : ""));
$("#take-theirs").addEventListener("click", () => { S.project.etag = S.conflict.etag; $("#spec-text").value = S.conflict.text; refresh(); });
$("#keep-mine").addEventListener("click", () => save($("#spec-text").value, S.conflict.etag));
$("#render-takes").addEventListener("click", () => S.shot && renderTakes(S.shot, Number($("#take-count").value), false));
$("#reroll").addEventListener("click", async () => {
  if (!S.shot) return;
  showTakes(await api(`/api/studio/reroll?${q(S.path)}&shot=${encodeURIComponent(S.shot)}`, { method: "POST" }));
});
$("#play-takes").addEventListener("click", () => {
  for (const v of document.querySelectorAll("#take-grid video")) { v.currentTime = 0; v.play().catch(() => {}); }
});
$("#login").addEventListener("submit", async (event) => {
  event.preventDefault();
  await api("/api/session", { method: "POST", json: { token: $("#token").value } });
  $("#login").hidden = true;
  await start();
});

async function start() {
  try {
    await loadProjects();
    const wanted = new URLSearchParams(location.search).get("project");
    if (wanted) await openProject(wanted);
    else if ($("#project").value) await openProject($("#project").value);
  } catch (_) { /* 401: the login form is shown */ }
}
window.studio = { S, api, edit, show, el, q, say, refresh, view };
start();
