"use strict";
// Upload page: posts to /v1/audio/{transcriptions,translations} (verbose_json) and offers TXT/SRT/VTT.
// With "Speakers" ticked it asks for diarize=true: a speaker column, one colour per speaker, and the
// speakers in the SRT (Speaker A: ...) and VTT (<v Speaker A>...) downloads, as the server writes them.
(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("form"), fileInput = $("file"), drop = $("drop"), submit = $("submit");
  const apiKey = $("apikey");
  let chosen = null;
  let result = null;

  apiKey.value = localStorage.getItem("gateway-api-key") || "";
  apiKey.addEventListener("change", () => localStorage.setItem("gateway-api-key", apiKey.value));

  function authHeaders() {
    return apiKey.value ? { Authorization: "Bearer " + apiKey.value } : {};
  }

  function choose(file) {
    chosen = file || null;
    $("drop-text").textContent = chosen ? chosen.name + " (" + (chosen.size / 1048576).toFixed(2) + " MB)"
                                        : "Drop an audio or video file here, or click to choose one";
    submit.disabled = !chosen;
  }
  fileInput.addEventListener("change", () => choose(fileInput.files[0]));
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => { if (e.dataTransfer.files.length) choose(e.dataTransfer.files[0]); });

  fetch("/v1/models", { headers: authHeaders() }).then((r) => r.ok ? r.json() : null).then((body) => {
    if (!body) return;
    const select = $("model");
    body.data.map((m) => m.id).filter((id) => id !== "whisper-1").forEach((id) => {
      const option = document.createElement("option");
      option.value = option.textContent = id;
      select.appendChild(option);
    });
  }).catch(() => {});

  function pad(n, width) { return String(n).padStart(width, "0"); }
  function stamp(seconds, sep) {
    let ms = Math.max(0, Math.round(seconds * 1000));
    const h = Math.floor(ms / 3600000); ms -= h * 3600000;
    const m = Math.floor(ms / 60000); ms -= m * 60000;
    const s = Math.floor(ms / 1000); ms -= s * 1000;
    return pad(h, 2) + ":" + pad(m, 2) + ":" + pad(s, 2) + sep + pad(ms, 3);
  }
  // An unnamed speaker (A, B, ...) reads "Speaker A"; a named one keeps its name (gateway/formats.py).
  function who(speaker) { return /^[A-Z]{1,2}$/.test(speaker) ? "Speaker " + speaker : speaker; }
  function voice(speaker) {
    return "<v " + who(speaker).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").split(/\s+/).join(" ") + ">";
  }
  function cues() {
    return result.segments.map((s) => [s.start, Math.max(s.start, s.end), s.text.trim().split(/\s+/).join(" "), s.speaker])
                          .filter((c) => c[2]);
  }
  const builders = {
    txt: () => result.text + "\n",
    srt: () => cues().map((c, i) => (i + 1) + "\n" + stamp(c[0], ",") + " --> " + stamp(c[1], ",") + "\n" +
                                    (c[3] ? who(c[3]) + ": " : "") + c[2] + "\n").join("\n"),
    vtt: () => "WEBVTT\n\n" + cues().map((c) => stamp(c[0], ".") + " --> " + stamp(c[1], ".") + "\n" +
                                             (c[3] ? voice(c[3]) : "") + c[2] + "\n").join("\n"),
  };
  // One colour per speaker, in order of appearance: eight distinct hues, then the golden angle.
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
  function colour(index) { return index < PALETTE.length ? PALETTE[index] : "hsl(" + ((index * 137.5) % 360) + ", 60%, 40%)"; }
  const types = { txt: "text/plain", srt: "application/x-subrip", vtt: "text/vtt" };
  Object.keys(builders).forEach((kind) => $("dl-" + kind).addEventListener("click", () => {
    const blob = new Blob([builders[kind]()], { type: types[kind] + ";charset=utf-8" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = (chosen ? chosen.name.replace(/\.[^.]*$/, "") : "transcript") + "." + kind;
    document.body.appendChild(link);
    link.click();
    setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  }));

  function show(body) {
    result = body;
    $("text").textContent = body.text;
    $("meta").textContent = "(" + body.language + ", " + body.duration.toFixed(1) + " s)";
    const tbody = $("segments").querySelector("tbody");
    tbody.replaceChildren();
    const speakers = [];
    body.segments.forEach((s) => { if (s.speaker && !speakers.includes(s.speaker)) speakers.push(s.speaker); });
    $("speaker-col").hidden = speakers.length === 0;
    body.segments.forEach((s) => {
      const row = tbody.insertRow();
      row.insertCell().textContent = stamp(s.start, ".");
      row.insertCell().textContent = stamp(s.end, ".");
      row.cells[0].className = row.cells[1].className = "time";
      if (speakers.length) {
        const cell = row.insertCell();
        cell.className = "speaker";
        cell.textContent = s.speaker ? who(s.speaker) : "";
        if (s.speaker) {
          cell.dataset.speaker = s.speaker;
          cell.style.color = colour(speakers.indexOf(s.speaker));
        }
      }
      row.insertCell().textContent = s.text.trim();
    });
    $("result").hidden = false;
  }

  function fail(message) {
    $("error").textContent = message;
    $("error").hidden = false;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!chosen) return;
    const data = new FormData();
    data.append("file", chosen, chosen.name);
    data.append("model", $("model").value);
    data.append("response_format", "verbose_json");
    if ($("language").value) data.append("language", $("language").value);
    if ($("task").value === "transcribe" && $("chinese").value) data.append("chinese_script", $("chinese").value);
    data.append("timestamp_granularities[]", "segment");
    if ($("words").checked) data.append("timestamp_granularities[]", "word");
    if ($("diarize").checked && $("task").value === "transcribe") data.append("diarize", "true");
    const url = $("task").value === "translate" ? "/v1/audio/translations" : "/v1/audio/transcriptions";

    const xhr = new XMLHttpRequest();
    const progress = $("progress"), status = $("status");
    $("error").hidden = true;
    $("result").hidden = true;
    $("progress-box").hidden = false;
    progress.value = 0;
    status.textContent = "Uploading…";
    submit.disabled = true;
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) progress.value = (100 * e.loaded) / e.total; };
    xhr.upload.onload = () => { progress.removeAttribute("value"); status.textContent = "Transcribing…"; };
    xhr.onload = () => {
      submit.disabled = false;
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 200 && body) {
        progress.value = 100;
        status.textContent = "Done";
        show(body);
      } else {
        status.textContent = "Failed";
        fail("Error " + xhr.status + ": " + (body && body.error ? body.error.message : xhr.statusText));
      }
    };
    xhr.onerror = () => { submit.disabled = false; status.textContent = "Failed"; fail("Network error"); };
    xhr.open("POST", url);
    Object.entries(authHeaders()).forEach(([k, v]) => xhr.setRequestHeader(k, v));
    xhr.send(data);
  });
})();
