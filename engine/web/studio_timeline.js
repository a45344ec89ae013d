// reel studio: the timeline (shots by duration, audio tracks with the server's waveforms, drag to position,
// volume and fades), the film with a playhead, exports, and the characters panel. Uses window.studio.
"use strict";

(() => {
  const { S, api, edit, el, q, say, refresh } = window.studio;
  const $ = (sel) => document.querySelector(sel);
  const PX = 60; // pixels per second

  function shotBlock(shot) {
    return el("div", { class: `clip ${shot.transition}`, style: `width:${Math.max(1, (shot.duration || 0) * PX)}px`,
                       title: `${shot.id}: ${shot.duration}s, ${shot.transition}` },
      el("span", { text: `${shot.id} · ${shot.duration ?? "?"}s${shot.transition !== "cut" ? ` · ${shot.transition}` : ""}` }));
  }

  async function drawWave(canvas, url) {
    const wave = await api(`${url}&bins=${Math.max(8, Math.min(2000, canvas.width))}`);
    const g = canvas.getContext("2d");
    g.fillStyle = "#7ab";
    const step = canvas.width / wave.peaks.length;
    wave.peaks.forEach((p, i) => {
      const h = p * canvas.height;
      g.fillRect(i * step, (canvas.height - h) / 2, Math.max(1, step - 0.5), h);
    });
    canvas.dataset.seconds = wave.seconds;
    canvas.dataset.peaks = wave.peaks.length;
  }

  function number(label, value, field, track, min, max, stepValue) {
    const input = el("input", { type: "number", min, max, step: stepValue, value: value ?? "", "aria-label": `${label} of track ${track}` });
    input.addEventListener("change", () => edit({ op: "set_audio", track, field, value: input.value === "" ? null : Number(input.value) }));
    return el("label", {}, label, input);
  }

  function audioTrack(t) {
    const canvas = el("canvas", { width: 400, height: 40, class: "wave", "aria-hidden": "true" });
    const box = el("div", { class: "audio-clip", tabindex: "0", style: `left:${(t.at || 0) * PX}px`,
                            "aria-label": `audio ${t.file} at ${t.at || 0}s; arrow keys move it` }, canvas);
    drawWave(canvas, t.waveform).then(() => { canvas.style.width = `${Number(canvas.dataset.seconds) * PX}px`; }).catch(() => {});
    let startX = null, startAt = 0;
    box.addEventListener("pointerdown", (e) => { startX = e.clientX; startAt = t.at || 0; box.setPointerCapture(e.pointerId); });
    box.addEventListener("pointermove", (e) => { if (startX !== null) box.style.left = `${Math.max(0, startAt * PX + e.clientX - startX)}px`; });
    box.addEventListener("pointerup", (e) => {
      if (startX === null) return;
      const at = Math.max(0, Math.round((startAt + (e.clientX - startX) / PX) * 100) / 100);
      startX = null;
      if (at !== startAt) edit({ op: "set_audio", track: t.index, field: "at", value: at });
    });
    box.addEventListener("keydown", (e) => {
      if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
      e.preventDefault();
      const at = Math.max(0, Math.round(((t.at || 0) + (e.key === "ArrowLeft" ? -0.25 : 0.25)) * 100) / 100);
      edit({ op: "set_audio", track: t.index, field: "at", value: at });
    });
    return el("div", { class: "track audio", "data-track": t.index },
      el("div", { class: "lane" }, box),
      el("div", { class: "track-controls" }, el("span", { text: t.file }),
        number("at (s)", t.at, "at", t.index, 0, 3600, 0.05),
        number("volume", t.volume, "volume", t.index, 0, 16, 0.05),
        number("fade in (s)", t.fade_in, "fade_in", t.index, 0, 60, 0.1),
        number("fade out (s)", t.fade_out, "fade_out", t.index, 0, 60, 0.1),
        el("button", { type: "button", text: "Remove", "aria-label": `remove audio track ${t.index}`,
                       onclick: () => edit({ op: "remove_audio", track: t.index }) })));
  }

  function renderFilm(film) {
    const video = $("#film");
    $("#film-status").textContent = film ? `film job ${film.job}: ${film.status}` : "not rendered";
    $("#exports").replaceChildren(...Object.entries((film && film.exports) || {}).map(([kind, url]) =>
      el("a", { href: url, class: `export ${kind}`, download: "", text: `Export ${kind.toUpperCase()}` })));
    if (film && film.url) {
      if (video.dataset.src !== film.url) { video.src = film.url; video.dataset.src = film.url; }
      video.hidden = false;
    } else if (film && (film.status === "queued" || film.status === "running") && !S.streams.has(film.job)) {
      const events = new EventSource(`/api/jobs/${film.job}/events`);
      S.streams.set(film.job, events);
      events.addEventListener("job", (e) => { $("#film-status").textContent = `film job ${film.job}: ${JSON.parse(e.data).progress.message || ""}`; });
      events.addEventListener("end", () => { events.close(); S.streams.delete(film.job); refresh(); });
    }
  }

  window.renderTimeline = (project) => {
    $("#shot-track").replaceChildren(...project.shots.map(shotBlock));
    $("#audio-tracks").replaceChildren(...project.audio.map(audioTrack));
    renderFilm(project.film);
  };

  $("#film").addEventListener("timeupdate", () => { $("#playhead").style.left = `${$("#film").currentTime * PX}px`; });
  for (const [id, preview] of [["#render-film", false], ["#preview-film", true]]) {
    $(id).addEventListener("click", async () => {
      const job = await api(`/api/studio/film?${q(S.path)}&preview=${preview}`, { method: "POST" });
      if (job) { say(`film queued (job ${job.id})`); refresh(); }
    });
  }
  $("#add-audio").addEventListener("click", () => {
    const file = $("#audio-file").value;
    if (!file) return;
    const base = S.project.path.slice(0, S.project.path.lastIndexOf("/") + 1);
    edit({ op: "add_audio", fields: { file: file.startsWith(base) ? file.slice(base.length) : file, at: 0 } });
  });

  window.renderCharacters = (project) => {
    $("#character-list").replaceChildren(...project.characters.map((c) => el("li", { class: "character" },
      c.thumbnail ? el("img", { src: c.thumbnail, alt: `${c.name} in a preview` }) : el("div", { class: "no-thumb", text: "no preview" }),
      el("strong", { text: c.name }),
      el("span", { text: ` trigger “${c.trigger}” · LoRA ${c.lora.join(", ") || "—"} · weight ${c.weight}` }),
      el("button", { type: "button", text: "Insert", "aria-label": `insert ${c.name} into the last prompt`, onclick: () => {
        const last = S.lastPrompt;
        if (!last) return say("click into a prompt first");
        edit({ op: "set_shot", shot: last.shot, field: "prompt", value: `${last.node.value} {${c.name}}` });
      } }))));
  };
})();
