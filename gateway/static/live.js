// Live subtitles: microphone -> AudioWorklet -> 16 kHz int16 PCM -> /v1/stream; no dependencies.
"use strict";

const TARGET_RATE = 16000;
const CHUNK_SAMPLES = 1600; // 100 ms at 16 kHz per WebSocket frame

const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"), stop: $("stop"), status: $("status"), latency: $("latency"), error: $("error"),
  committed: $("committed"), tentative: $("tentative"), language: $("language"), chinese: $("chinese"),
  task: $("task"), level: document.querySelector("#level > div"),
};

// The worklet just forwards each 128-sample render quantum (mono) to the main thread.
const WORKLET = `
class Tap extends AudioWorkletProcessor {
  process(inputs) {
    const input = inputs[0];
    if (input && input[0]) this.port.postMessage(input[0].slice(0));
    return true;
  }
}
registerProcessor("tap", Tap);
`;

let session = null;

function setStatus(text) { ui.status.textContent = text; }
function showError(text) { ui.error.textContent = text || ""; }

// Linear-interpolation resampler from the context's rate to 16 kHz, keeping state across blocks.
class Resampler {
  constructor(fromRate) { this.ratio = fromRate / TARGET_RATE; this.pos = 0; this.last = 0; }
  process(input) {
    if (this.ratio === 1) return input;
    const out = [];
    // this.pos is the next output sample's position in input coordinates (may be negative: -1 = this.last).
    while (this.pos < input.length - 1 + 1e-9) {
      const i = Math.floor(this.pos), frac = this.pos - i;
      const a = i < 0 ? this.last : input[i];
      const b = i + 1 < input.length ? input[i + 1] : input[input.length - 1];
      out.push(a + (b - a) * frac);
      this.pos += this.ratio;
    }
    this.pos -= input.length;
    this.last = input[input.length - 1];
    return Float32Array.from(out);
  }
}

function toInt16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = s < 0 ? s * 32768 : s * 32767;
  }
  return out;
}

function wsUrl() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const params = new URLSearchParams(location.search);
  const key = params.get("api_key") || params.get("token");
  return `${proto}//${location.host}/v1/stream` + (key ? `?api_key=${encodeURIComponent(key)}` : "");
}

async function start() {
  showError("");
  ui.committed.textContent = "";
  ui.tentative.textContent = "";
  ui.latency.textContent = "";
  ui.start.disabled = true;
  setStatus("requesting microphone…");
  let stream, ctx;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      // Raw speech transcribes best: no echo cancellation, noise suppression or gain riding.
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (err) {
    showError(`microphone unavailable: ${err.message || err}`);
    ui.start.disabled = false;
    setStatus("idle");
    return;
  }
  try {
    ctx = new AudioContext({ sampleRate: TARGET_RATE }); // Chromium resamples the microphone for us
  } catch (err) {
    ctx = new AudioContext(); // e.g. Firefox: resample in JS below
  }
  const s = {
    stream, ctx, ws: null, pending: [], pendingLen: 0, sentSamples: 0, t0: 0, stopped: false,
    resampler: new Resampler(ctx.sampleRate), lastLatency: null, latencies: [],
  };
  session = s;

  const ws = new WebSocket(wsUrl());
  ws.binaryType = "arraybuffer";
  s.ws = ws;
  ws.onopen = () => {
    ws.send(JSON.stringify({
      type: "start", language: ui.language.value, task: ui.task.value, chinese: ui.chinese.value,
      sample_rate: TARGET_RATE, format: "pcm_s16le",
    }));
    s.t0 = performance.now();
    setStatus("listening");
    ui.stop.disabled = false;
  };
  ws.onmessage = (msg) => onEvent(s, JSON.parse(msg.data));
  ws.onerror = () => showError("connection error");
  ws.onclose = (ev) => {
    if (ev.code !== 1000 && ev.code !== 1005) showError(`stream closed (${ev.code}${ev.reason ? ": " + ev.reason : ""})`);
    cleanup(s);
    if (ui.status.textContent !== "done") setStatus("idle");
  };

  const blobUrl = URL.createObjectURL(new Blob([WORKLET], { type: "application/javascript" }));
  await ctx.audioWorklet.addModule(blobUrl);
  const source = ctx.createMediaStreamSource(stream);
  const tap = new AudioWorkletNode(ctx, "tap");
  tap.port.onmessage = (ev) => onAudio(s, ev.data);
  source.connect(tap);
  // Keep the graph pulled without playing the microphone back.
  const mute = ctx.createGain();
  mute.gain.value = 0;
  tap.connect(mute).connect(ctx.destination);
  s.source = source; s.tap = tap;
  if (ctx.state === "suspended") await ctx.resume();
}

function onAudio(s, block) {
  if (s.stopped || !s.ws || s.ws.readyState !== WebSocket.OPEN || !s.t0) return;
  let peak = 0;
  for (let i = 0; i < block.length; i++) peak = Math.max(peak, Math.abs(block[i]));
  ui.level.style.width = `${Math.min(100, peak * 140)}%`;
  const samples = s.resampler.process(block);
  s.pending.push(samples);
  s.pendingLen += samples.length;
  if (s.pendingLen >= CHUNK_SAMPLES) flush(s);
}

function flush(s) {
  if (!s.pendingLen) return;
  const all = new Float32Array(s.pendingLen);
  let off = 0;
  for (const p of s.pending) { all.set(p, off); off += p.length; }
  s.pending = []; s.pendingLen = 0;
  s.ws.send(toInt16(all).buffer);
  s.sentSamples += all.length;
}

function onEvent(s, ev) {
  if (ev.type === "final") {
    ui.committed.textContent += (ui.committed.textContent ? joiner(ev.text) : "") + ev.text;
    const words = ev.words || [];
    if (words.length) {
      // Audio time sent so far vs the last committed word's end: how far the subtitles lag the speech.
      const heard = s.sentSamples / TARGET_RATE;
      const lag = Math.max(0, heard - words[words.length - 1].end);
      s.latencies.push(lag);
      const sorted = [...s.latencies].sort((a, b) => a - b);
      const median = sorted[Math.floor(sorted.length / 2)];
      ui.latency.textContent = `latency ${lag.toFixed(1)} s (median ${median.toFixed(1)} s)`;
    }
  } else if (ev.type === "partial") {
    ui.tentative.textContent = ev.text ? (ui.committed.textContent ? joiner(ev.text) : "") + ev.text : "";
  } else if (ev.type === "error") {
    showError(ev.message);
  } else if (ev.type === "done") {
    ui.tentative.textContent = "";
    ui.committed.textContent = ev.text;
    setStatus("done");
  }
}

// CJK text joins without spaces; other scripts get one space between chunks.
function joiner(text) {
  return /^[\u3000-\u9fff\uff00-\uffef]/.test(text) ? "" : " ";
}

function stop() {
  const s = session;
  if (!s || s.stopped) return;
  ui.stop.disabled = true;
  flush(s);
  s.stopped = true;
  if (s.ws && s.ws.readyState === WebSocket.OPEN) {
    s.ws.send(JSON.stringify({ type: "stop" }));
    setStatus("finishing…");
  }
  stopAudio(s);
}

function stopAudio(s) {
  try { s.stream.getTracks().forEach((t) => t.stop()); } catch (e) { /* already stopped */ }
  if (s.ctx && s.ctx.state !== "closed") s.ctx.close().catch(() => { /* already closing */ });
}

function cleanup(s) {
  s.stopped = true;
  stopAudio(s);
  ui.start.disabled = false;
  ui.stop.disabled = true;
  ui.level.style.width = "0";
}

ui.start.addEventListener("click", start);
ui.stop.addEventListener("click", stop);
