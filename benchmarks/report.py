"""report.md, summary.json and the PNG plots from one run's results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .common import error_rate, load_clips

SYSTEMS = {
    "gateway": "gateway + Triton (this service)",
    "baseline_a": "(a) seed-style: one WhisperModel, one request at a time",
    "baseline_b": "(b) BatchedInferencePipeline per request",
}
TARGET_RATIO, TARGET_WER_POINTS, TARGET_OVERHEAD = 6.0, 0.5, 0.10
ACCURACY_MIN_CLIPS = 5  # languages with at least this many clips are held to the +0.5-point target


def _sweep(results: dict, key: str) -> dict:
    part = results.get(key) or {}
    return {int(c): v for c, v in (part.get("sweep") or {}).items()}


def _pooled_accuracy(sweep: dict, refs: dict) -> dict:
    rows = [r for level in sweep.values() for r in level.get("rows", []) if r["status"] == 200]
    out = {}
    for lang, key in (("en", "wer_en"), ("zh", "cer_zh")):
        sel = [r for r in rows if r["language"] == lang]
        out[key] = round(error_rate([refs[r["file"]] for r in sel], [r["text"] for r in sel], lang), 4) if sel else None
    return out


def _headline_c(concurrencies: list[int]) -> int | None:
    below = [c for c in concurrencies if c <= 8]
    return 8 if 8 in concurrencies else (max(below) if below else None)


def summarise(results: dict) -> dict:
    refs = {c.file: c.reference for c in load_clips(Path(results["audio_dir"]))}
    concurrencies = results.get("concurrency", [])
    hc = _headline_c(concurrencies)
    summary: dict = {
        "date": results.get("started"), "quick": results.get("quick"), "machine": results.get("machine"),
        "gpu": results.get("machine", {}).get("gpu"), "headline_concurrency": hc, "systems": {},
        "response_cache": "disabled (Triton started from a copy of model_repository with response_cache enable: false)",
    }
    for key, label in SYSTEMS.items():
        part = results.get(key) or {}
        if "skipped" in part or not part:
            summary["systems"][key] = {"label": label, "skipped": part.get("skipped", "not run")}
            continue
        sweep = _sweep(results, key)
        entry = {
            "label": label,
            "rtfx": {c: v["rtfx"] for c, v in sweep.items()},
            "requests_per_s": {c: v["requests_per_s"] for c, v in sweep.items()},
            "latency_p50_s": {c: v["latency_p50_s"] for c, v in sweep.items()},
            "latency_p95_s": {c: v["latency_p95_s"] for c, v in sweep.items()},
            "latency_p99_s": {c: v["latency_p99_s"] for c, v in sweep.items()},
            "errors": {c: v["errors"] for c, v in sweep.items()},
            **_pooled_accuracy(sweep, refs),
        }
        if "mixed" in part:
            m = part["mixed"]
            entry["mixed"] = {k: m[k] for k in ("rtfx", "latency_p50_s", "latency_p95_s", "errors", "requests", "wer_en", "cer_zh")}
        summary["systems"][key] = entry

    a = summary["systems"].get("baseline_a", {})
    ratios = {}
    for key, entry in summary["systems"].items():
        if hc is not None and "rtfx" in entry and "rtfx" in a and a["rtfx"].get(hc):
            ratios[key] = round(entry["rtfx"][hc] / a["rtfx"][hc], 3)
    summary["ratio_vs_baseline_a"] = {"concurrency": hc, **ratios}

    # gateway overhead at concurrency 1, against the model in-process on the same clips
    gw = _sweep(results, "gateway").get(1)
    ref = results.get("inprocess_reference") or {}
    direct = results.get("triton_direct_c1")
    if gw and ref.get("rows"):
        def per_clip(rows):
            d: dict = {}
            for r in rows:
                d.setdefault(r["file"], []).append(r["latency_s"])
            return {f: float(np.median(v)) for f, v in d.items()}

        g, p = per_clip([r for r in gw["rows"] if r["status"] == 200]), per_clip(ref["rows"])
        files = sorted(set(g) & set(p))
        t = per_clip(direct) if isinstance(direct, list) else {}
        gsum, psum = sum(g[f] for f in files), sum(p[f] for f in files)
        tsum = sum(t[f] for f in files if f in t) if t and all(f in t for f in files) else None
        summary["gateway_overhead_c1"] = {
            "clips": len(files), "gateway_total_s": round(gsum, 3), "inprocess_total_s": round(psum, 3),
            "triton_grpc_total_s": round(tsum, 3) if tsum else None,
            "overhead_fraction": round(gsum / psum - 1, 4) if psum else None,
            "triton_only_overhead_fraction": round(tsum / psum - 1, 4) if tsum and psum else None,
            "gateway_over_triton_fraction": round(gsum / tsum - 1, 4) if tsum else None,
        }
    else:
        summary["gateway_overhead_c1"] = {"skipped": "gateway or in-process reference missing"}

    # guard fallbacks
    fb: dict = {}
    if ref.get("windows"):
        fb["deployed_inprocess_reference"] = {"fallbacks": ref["fallbacks"], "windows": ref["windows"], "rate": round(ref["fallbacks"] / ref["windows"], 4)}
    for row in (results.get("levers") or {}).get("rows", []):
        fb[row["name"]] = {"fallbacks": row["fallbacks"], "windows": row["windows"], "rate": row["fallback_rate"]}
    summary["fallback_rate"] = fb

    pa = results.get("perf_analyzer") or {}
    summary["perf_analyzer"] = {int(c): v for c, v in (pa.get("levels") or {}).items()} if "levels" in pa else {"skipped": pa.get("skipped", "not run")}
    summary["levers"] = [{k: r[k] for k in ("name", "rtfx", "wer_en", "fallback_rate")} for r in (results.get("levers") or {}).get("rows", [])]

    # targets
    g8 = summary["systems"].get("gateway", {})
    targets = {"rtfx_ratio_target": TARGET_RATIO, "wer_points_target": TARGET_WER_POINTS, "overhead_target": TARGET_OVERHEAD}
    if "gateway" in ratios:
        targets["rtfx_ratio"] = ratios["gateway"]
        targets["rtfx_ratio_met"] = ratios["gateway"] >= TARGET_RATIO
    if g8.get("wer_en") is not None and a.get("wer_en") is not None:
        delta = round((g8["wer_en"] - a["wer_en"]) * 100, 2)
        targets["wer_delta_points"] = delta
        targets["wer_met"] = delta <= TARGET_WER_POINTS
    ov = summary["gateway_overhead_c1"].get("overhead_fraction")
    if ov is not None:
        targets["overhead_met"] = ov <= TARGET_OVERHEAD
    summary["accuracy"] = _accuracy(results)
    gaps = summary["accuracy"].get("gaps_points")
    if gaps is not None:
        held = {lang: g for lang, g in gaps.items() if summary["accuracy"]["table"][lang]["clips"] >= ACCURACY_MIN_CLIPS}
        targets["accuracy_gaps_points"] = held
        targets["accuracy_met"] = all(g <= TARGET_WER_POINTS for g in held.values()) and not summary["accuracy"]["empty"]
    summary["targets"] = targets
    return summary


def _accuracy(results: dict) -> dict:
    """Per language, the gateway against faster-whisper's ``transcribe`` (the seed-style server) on the same clips."""
    from .accuracy import DevClip, table

    gw = (results.get("gateway") or {}).get("accuracy_texts")
    fw = (results.get("baseline_a") or {}).get("accuracy_texts")
    if not gw or not fw:
        return {"skipped": "gateway or faster-whisper texts missing"}
    clips = [DevClip(c["file"], Path(results["audio_dir"]) / c["file"], c["language"], c["duration"], c["reference"])
             for c in results.get("accuracy_clips", [])]
    rows = table(clips, {"faster-whisper": fw, "gateway": gw})
    return {"half": results.get("half"), "clips": len(clips), "table": rows,
            "gaps_points": {lang: r["gap_points"]["gateway"] for lang, r in rows.items()},
            "empty": sorted(f for r in rows.values() for f in r["empty"].get("gateway", []))}


def headline(summary: dict) -> list[str]:
    hc = summary.get("headline_concurrency")
    lines = []
    for key, entry in summary["systems"].items():
        if "skipped" in entry:
            lines.append(f"{key}: skipped ({entry['skipped']})")
            continue
        lines.append(f"{key}: RTFx@{hc} {entry['rtfx'].get(hc)}  ratio vs (a) {summary['ratio_vs_baseline_a'].get(key)}  "
                     f"WER {entry.get('wer_en')}  CER {entry.get('cer_zh')}")
    ov = summary.get("gateway_overhead_c1", {})
    if "overhead_fraction" in ov:
        lines.append(f"gateway overhead at c=1 vs in-process: {ov['overhead_fraction'] * 100:+.1f}%")
    return lines


def _plots(summary: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    pa = summary.get("perf_analyzer") or {}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, entry in summary["systems"].items():
        if "rtfx" in entry:
            cs = sorted(entry["rtfx"])
            ax.plot(cs, [entry["rtfx"][c] for c in cs], marker="o", label=entry["label"])
    if pa and "skipped" not in pa:
        cs = sorted(c for c in pa if "rtfx" in pa[c])
        if cs:
            ax.plot(cs, [pa[c]["rtfx"] for c in cs], marker="s", linestyle=":", label="Triton over gRPC (perf_analyzer)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("RTFx (audio seconds per wall second)")
    ax.set_title("Throughput on short real clips")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "throughput_vs_concurrency.png", dpi=120)
    plt.close(fig)
    files.append("throughput_vs_concurrency.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (key, entry) in enumerate(summary["systems"].items()):
        if "latency_p50_s" in entry:
            cs = sorted(entry["latency_p50_s"])
            line, = ax.plot(cs, [entry["latency_p50_s"][c] for c in cs], marker="o", label=f"{entry['label']} p50")
            ax.plot(cs, [entry["latency_p95_s"][c] for c in cs], marker="x", linestyle="--", color=line.get_color(), label=f"{key} p95")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("latency per request (s)")
    ax.set_title("Latency on short real clips")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "latency_vs_concurrency.png", dpi=120)
    plt.close(fig)
    files.append("latency_vs_concurrency.png")
    return files


def _f(x, digits=2, pct=False) -> str:
    if x is None:
        return "–"
    if pct:
        return f"{x * 100:+.1f}%"
    return f"{x:.{digits}f}"


def _markdown(results: dict, summary: dict, plots: list[str]) -> str:
    m = results.get("machine", {})
    hc = summary.get("headline_concurrency")
    L = [f"# Whisper-on-Triton benchmark — {summary.get('date')}", ""]
    if results.get("quick"):
        L += ["**Quick run** (`--quick`): fewer clips and levels; use the full run for figures to quote.", ""]
    L += ["## Machine", "",
          f"- CPU: {m.get('cpu_model')} — {m.get('cpu_count')} cores; memory {m.get('memory_gb')} GB; {m.get('platform')}; Python {m.get('python')}",
          f"- GPU: **{m.get('gpu')}** — the GPU targets (large-v3 fp16 on H100) were not measured in this run.",
          f"- Load average at start: {m.get('load_average_at_start')} (the cores are shared: compare ratios within one run only)",
          f"- Packages: {m.get('packages')}",
          f"- Wall time of the run: {results.get('elapsed_s')} s", ""]
    L += ["## Headline (short real utterances, concurrency %s)" % hc, ""]
    L += ["| system | RTFx | ratio vs (a) | p50 latency (s) | p95 latency (s) | WER en | CER zh | errors |", "|---|---|---|---|---|---|---|---|"]
    for key, e in summary["systems"].items():
        if "skipped" in e:
            L.append(f"| {e['label']} | skipped: {e['skipped']} | | | | | | |")
            continue
        L.append(f"| {e['label']} | {_f(e['rtfx'].get(hc))} | {_f(summary['ratio_vs_baseline_a'].get(key))} | {_f(e['latency_p50_s'].get(hc))} | "
                 f"{_f(e['latency_p95_s'].get(hc))} | {_f(e.get('wer_en'), 4)} | {_f(e.get('cer_zh'), 4)} | {sum(e['errors'].values())} |")
    t = summary.get("targets", {})
    L += ["", "Targets (issues 6 and 16): gateway RTFx >= %.1fx baseline (a) at concurrency 8: **%s** (ratio %s); WER within %.1f points of (a): **%s** (delta %s points); gateway + Triton overhead <= 10%% at concurrency 1: **%s**."
          % (TARGET_RATIO, {True: "met", False: "NOT met"}.get(t.get("rtfx_ratio_met"), "not measured"), _f(t.get("rtfx_ratio")),
             TARGET_WER_POINTS, {True: "met", False: "NOT met"}.get(t.get("wer_met"), "not measured"), _f(t.get("wer_delta_points")),
             {True: "met", False: "NOT met"}.get(t.get("overhead_met"), "not measured")), ""]
    acc = summary.get("accuracy", {})
    if "table" in acc:
        L += [f"## Accuracy against faster-whisper (`{acc['half']}` half of benchmarks/devset.tsv, {acc['clips']} clips, language given)", "",
              "The gateway's texts against faster-whisper's own `WhisperModel.transcribe` (the seed-style server (a): same weights, "
              "beam 5, its defaults), both scored against the references: Whisper's English normaliser for English, the basic "
              "normaliser for other space-delimited languages (WER), characters for zh/yue/ja (CER; zh and yue after converting "
              f"both sides to Simplified). Target: gap at most +{TARGET_WER_POINTS} points for every language with at least "
              f"{ACCURACY_MIN_CLIPS} clips, and no empty text where faster-whisper has text: "
              f"**{ {True: 'met', False: 'NOT met'}.get(t.get('accuracy_met'), 'not measured') }**.", "",
              "| language | clips | metric | gateway | faster-whisper | gap (points) | clips that differ most |", "|---|---|---|---|---|---|---|"]
        for lang, r in acc["table"].items():
            worst = ", ".join(f"{w['file']} ({w['delta'] * 100:+.0f})" for w in r.get("worst", []))
            L.append(f"| {lang} | {r['clips']} | {r['metric']} | {r['rates']['gateway'] * 100:.1f}% | {r['rates']['faster-whisper'] * 100:.1f}% | "
                     f"{r['gap_points']['gateway']:+.2f} | {worst} |")
        L += ["", f"Empty outputs where faster-whisper has text: {acc['empty'] or 'none'}.", ""]
    L += ["WER/CER are corpus-level over every response of the sweep, after Whisper's English normaliser (WER) or the basic normaliser + traditional-to-simplified conversion (CER, one token per character). "
          "An error is a non-200 answer or a text that does not match its own clip: distance to its own reference above 0.5 (English) / 0.75 (Mandarin), or another clip's reference fits it better "
          "(distance = the smaller of WER/CER and a letters-only character error rate with digits spelled out, because Whisper's English normaliser turns 'one two three' into '123' but '1, 2, 3' into 'one 2 3'). "
          "That normaliser quirk also puts `en/uberi_english.wav` at WER 3.0 for every system, which inflates all English WERs equally.", ""]
    for p in plots:
        L += [f"![{p}]({p})", ""]

    L += ["## Concurrency sweep (HTTP client, httpx async, same clips for every system)", ""]
    L += ["| system | concurrency | requests | errors | RTFx | req/s | p50 (s) | p95 (s) | p99 (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for key in SYSTEMS:
        for c, v in sorted(_sweep(results, key).items()):
            L.append(f"| {key} | {c} | {v['requests']} | {v['errors']} | {_f(v['rtfx'])} | {_f(v['requests_per_s'])} | {_f(v['latency_p50_s'])} | {_f(v['latency_p95_s'])} | {_f(v['latency_p99_s'])} |")
    mixed_rows = [(k, summary["systems"][k]["mixed"]) for k in SYSTEMS if "mixed" in summary["systems"].get(k, {})]
    if mixed_rows:
        L += ["", f"### Mixed clips: short + medium (30–90 s) + long, concurrency {results.get('mixed_concurrency', 8)}", "",
              "Clips: " + ", ".join(f"{c['file']} ({c['duration']:.0f} s)" for c in results.get("mixed_clips", []) if c["kind"] != "short") + " plus every short clip.", "",
              "| system | requests | errors | RTFx | p50 (s) | p95 (s) | WER en | CER zh |", "|---|---|---|---|---|---|---|---|"]
        for k, v in mixed_rows:
            L.append(f"| {k} | {v['requests']} | {v['errors']} | {_f(v['rtfx'])} | {_f(v['latency_p50_s'])} | {_f(v['latency_p95_s'])} | {_f(v['wer_en'], 4)} | {_f(v['cer_zh'], 4)} |")
    errs = [(k, c, e) for k in SYSTEMS for c, v in _sweep(results, k).items() for e in v.get("error_examples", [])]
    if errs:
        L += ["", "Error examples:", ""] + [f"- {k} c={c}: {e}" for k, c, e in errs[:15]]

    ov = summary.get("gateway_overhead_c1", {})
    L += ["", "## Gateway overhead at concurrency 1", ""]
    if "skipped" in ov:
        L.append(f"Not measured: {ov['skipped']}.")
    else:
        L += [f"Same {ov['clips']} clips, one request at a time; sums of per-clip latency.", "",
              "| path | total latency (s) | vs in-process |", "|---|---|---|",
              f"| model in-process (`WhisperEngine.transcribe`, deployed parameters) | {_f(ov['inprocess_total_s'])} | – |",
              f"| Triton over gRPC (`client.WhisperTritonClient`) | {_f(ov['triton_grpc_total_s'])} | {_f(ov['triton_only_overhead_fraction'], pct=True)} |",
              f"| gateway (HTTP upload, decode, gRPC to Triton) | {_f(ov['gateway_total_s'])} | {_f(ov['overhead_fraction'], pct=True)} |"]

    pa = results.get("perf_analyzer") or {}
    L += ["", "## perf_analyzer (Triton over gRPC, real speech as `--input-data`)", ""]
    if "levels" not in pa:
        L.append(f"Not run: {pa.get('skipped')}")
    else:
        L += [f"Input: {len(pa.get('clips', []))} clips (mean {pa['mean_clip_s']:.2f} s) as base64 FP32 `AUDIO` plus the optional inputs; RTFx = inferences/s x mean clip length. "
              "Own CSV: `perf_analyzer.csv`; verbatim stdout: `perf_analyzer_stdout.txt`.", "",
              "| concurrency | infer/s | RTFx | p50 (s) | p95 (s) | p99 (s) | server queue (s) | server compute infer (s) | compute input (s) | compute output (s) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for c, v in sorted(((int(k), v) for k, v in pa["levels"].items())):
            if "error" in v:
                L.append(f"| {c} | error: {' '.join(v['error'].split())[:200]} | | | | | | | | |")
                continue
            L.append(f"| {c} | {_f(v['inferences_per_s'])} | {_f(v['rtfx'])} | {_f(v['latency_p50_s'])} | {_f(v['latency_p95_s'])} | {_f(v['latency_p99_s'])} | "
                     f"{_f(v['server_queue_s'], 3)} | {_f(v['server_compute_infer_s'], 3)} | {_f(v['server_compute_input_s'], 4)} | {_f(v['server_compute_output_s'], 4)} |")
        L += ["", "Commands:", "", "```"] + pa.get("argv", []) + ["```"]

    lev = (results.get("levers") or {}).get("rows", [])
    L += ["", "## Levers (in-process `WhisperEngine`, short English clips, one process per instance)", ""]
    if lev:
        base = lev[0]["rtfx"]
        L += [f"{len(results['levers']['clips'])} clips. 'requests per call' = requests handed to one `transcribe()` call, as Triton's dynamic batcher gives one instance. "
              "Instances run as separate processes started together, clips shared round-robin. No length grouping = windows batched in arrival order instead of longest-first.", "",
              "Context = the batch's longest window + margin, at least the floor (at most 30 s). Token budget = first-pass `max_length` per second of audio (0 = 448); a window that uses it all is re-decoded.", "",
              "| config | instances x threads | requests/call | max_batch_windows | context floor (s) | margin (s) | token budget (/s) | compute | length grouping | RTFx | x first row | WER en | fallbacks / windows |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in lev:
            L.append(f"| {r['name']} | {r['instances']}x{r['cpu_threads']} | {r['requests_per_call']} | {r['max_batch_windows']} | {r['context_floor_s']:g} | "
                     f"{r.get('context_margin_s', 0):g} | {r.get('max_tokens_per_s', 0):g} | {r['compute_type']} | "
                     f"{'yes' if r['group_by_length'] else 'no'} | {_f(r['rtfx'])} | {_f(r['rtfx'] / base)} | {_f(r['wer_en'], 4)} | {r['fallbacks']}/{r['windows']} |")
    else:
        L.append("Not run.")
    fb = summary.get("fallback_rate", {})
    if "deployed_inprocess_reference" in fb:
        d = fb["deployed_inprocess_reference"]
        L += ["", f"Guard fallback with the deployed parameters (in-process reference run): {d['fallbacks']} of {d['windows']} windows ({d['rate'] * 100:.1f}%). "
              "Triton does not export the engine's counters, so the rate is measured in-process with the same parameters."]

    L += ["", "## Every config value", "",
          f"- Clips (short set, {len(results.get('clips', []))}): " + ", ".join(f"{c['file']} ({c['duration']:.1f} s)" for c in results.get("clips", [])),
          f"- HTTP concurrency levels: {results.get('concurrency')}; each level sends whole shuffled passes over the clips, at least {results.get('passes', 1)} pass(es) and at least 4x concurrency requests (runs before this change used 2x; the request count of each level is in the sweep table); one warm-up request per system.",
          f"- perf_analyzer levels: {results.get('perf_concurrency')}",
          f"- CTranslate2 CPU instruction set, the same for every system (service, baselines, in-process rows unless the row says otherwise): **{results.get('cpu_isa', 'not recorded')}** (`cpu_isa` parameter, see whisper_triton/cpu.py).",
          f"- Baselines (a) and (b): {results.get('baseline_settings')} (faster-whisper defaults otherwise: VAD off for (a), (b) uses its own VAD chunking; condition_on_previous_text default; language sent by the client).",
          "- Triton: response cache **disabled** in a temporary copy of `model_repository/whisper` (identical otherwise), so repeated clips are decoded every time.",
          f"- Engine parameters (config.pbtxt): `{json.dumps(results.get('deployed_parameters'))}`", "",
          "<details><summary>config.pbtxt used</summary>", "", "```", results.get("triton_config_pbtxt", "(not run)"), "```", "</details>", ""]
    return "\n".join(L)


def write(results: dict, out_dir: Path) -> dict:
    summary = summarise(results)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    try:
        plots = _plots(summary, out_dir)
    except Exception as exc:  # matplotlib missing: the tables still get written
        plots = []
        print(f"plots skipped: {exc}")
    text = _markdown(results, summary, plots)
    if (out_dir / "NOTES.md").exists():  # hand-written analysis kept next to the generated report
        text = text.replace("## Machine", "Analysis and repeat runs: [NOTES.md](NOTES.md).\n\n## Machine", 1)
    (out_dir / "report.md").write_text(text)
    return summary


def main(argv=None) -> int:
    """Rewrite report.md, summary.json and the plots of a results directory from its raw.json."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    results = json.loads((args.directory / "raw.json").read_text())
    for line in headline(write(results, args.directory)):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
