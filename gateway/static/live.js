// Live subtitles: microphone -> AudioWorklet -> 16 kHz int16 PCM -> /v1/realtime (OpenAI Realtime
// transcription session, server VAD); no dependencies.
"use strict";

const TARGET_RATE = 16000;
const CHUNK_SAMPLES = 1600; // 100 ms at 16 kHz per WebSocket frame

const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"), stop: $("stop"), status: $("status"), latency: $("latency"), error: $("error"),
  committed: $("committed"), tentative: $("tentative"), language: $("language"), chinese: $("chinese"),
  level: document.querySelector("#level > div"),
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

// The page speaks OpenAI's Realtime protocol (transcription session, server VAD) to /v1/realtime. Browsers
// cannot set headers on a WebSocket: a token given as ?api_key= goes in the openai-insecure-api-key subprotocol.
function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const params = new URLSearchParams(location.search);
  const key = params.get("api_key") || params.get("token");
  const protocols = ["realtime"].concat(key ? [`openai-insecure-api-key.${key}`] : []);
  return new WebSocket(`${proto}//${location.host}/v1/realtime?intent=transcription`, protocols);
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
    stream, ctx, ws: null, pending: [], pendingLen: 0, ready: false, stopped: false, speaking: false,
    resampler: new Resampler(ctx.sampleRate), stoppedAt: {}, open: new Set(), latencies: [],
  };
  session = s;

  const ws = connect();
  s.ws = ws;
  ws.onopen = () => {
    ws.send(JSON.stringify({
      type: "session.update",
      session: {
        type: "transcription",
        audio: {
          input: {
            format: { type: "audio/pcm", rate: TARGET_RATE }, // 16 kHz: this server's extension of the protocol
            transcription: { model: "whisper-1", language: ui.language.value, chinese_script: ui.chinese.value },
            turn_detection: { type: "server_vad", threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 },
          },
        },
      },
    }));
  };
  ws.onmessage = (msg) => onEvent(s, JSON.parse(msg.data));
  ws.onerror = () => showError("connection error");
  ws.onclose = (ev) => {
    if (ev.code !== 1000 && ev.code !== 1005) showError(`session closed (${ev.code}${ev.reason ? ": " + ev.reason : ""})`);
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
  if (s.stopped || !s.ready || s.ws.readyState !== WebSocket.OPEN) return;
  let peak = 0;
  for (let i = 0; i < block.length; i++) peak = Math.max(peak, Math.abs(block[i]));
  ui.level.style.width = `${Math.min(100, peak * 140)}%`;
  const samples = s.resampler.process(block);
  s.pending.push(samples);
  s.pendingLen += samples.length;
  if (s.pendingLen >= CHUNK_SAMPLES) flush(s);
}

function base64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function flush(s) {
  if (!s.pendingLen) return;
  const all = new Float32Array(s.pendingLen);
  let off = 0;
  for (const p of s.pending) { all.set(p, off); off += p.length; }
  s.pending = []; s.pendingLen = 0;
  s.ws.send(JSON.stringify({ type: "input_audio_buffer.append", audio: base64(new Uint8Array(toInt16(all).buffer)) }));
}

function onEvent(s, ev) {
  switch (ev.type) {
    case "session.updated":
      s.ready = true;
      setStatus("listening");
      ui.stop.disabled = false;
      break;
    case "input_audio_buffer.speech_started":
      s.speaking = true;
      setStatus("speech");
      break;
    case "input_audio_buffer.speech_stopped":
      s.speaking = false;
      s.stoppedAt[ev.item_id] = performance.now();
      setStatus(s.stopped ? "finishing…" : "listening");
      break;
    case "input_audio_buffer.committed":
      s.open.add(ev.item_id);
      break;
    case "conversation.item.input_audio_transcription.delta":
      ui.tentative.textContent += (ui.tentative.textContent || ui.committed.textContent ? joiner(ev.delta) : "") + ev.delta;
      break;
    case "conversation.item.input_audio_transcription.completed": {
      // Each committed turn is one span: black, whole, as decoded once the speaker paused.
      if (ev.transcript) {
        const turn = document.createElement("span");
        turn.className = "turn";
        turn.textContent = (ui.committed.textContent ? joiner(ev.transcript) : "") + ev.transcript;
        ui.committed.appendChild(turn);
      }
      ui.tentative.textContent = "";
      const stopped = s.stoppedAt[ev.item_id];
      if (stopped !== undefined) {
        // How long after the speaker stopped (the pause detected) the turn's transcript arrived.
        const lag = (performance.now() - stopped) / 1000;
        s.latencies.push(lag);
        const sorted = [...s.latencies].sort((a, b) => a - b);
        ui.latency.textContent = `latency ${lag.toFixed(1)} s (median ${sorted[Math.floor(sorted.length / 2)].toFixed(1)} s)`;
      }
      s.open.delete(ev.item_id);
      maybeDone(s);
      break;
    }
    case "conversation.item.input_audio_transcription.failed":
      showError(ev.error.message);
      s.open.delete(ev.item_id);
      maybeDone(s);
      break;
    case "error":
      showError(ev.error.message);
      break;
  }
}

function maybeDone(s) {
  if (s.stopped && !s.speaking && s.open.size === 0) {
    setStatus("done");
    s.ws.close(1000);
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
  stopAudio(s);
  if (s.ws && s.ws.readyState === WebSocket.OPEN) {
    setStatus("finishing…");
    // The turn being spoken is committed now; the page is done when every committed turn is transcribed.
    if (s.speaking) s.ws.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
    s.speaking = false;
    maybeDone(s);
  }
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
