"""The deployment trade-off table: accuracy, size, latency, throughput and memory per variant.

Every variant is measured in a fresh process of its own, side by side in one run, against what
a user would otherwise run: a Hugging Face ``pipeline`` and a TF-IDF classifier. The process
first times single requests at 1 thread and reads its peak RSS (nothing else is loaded yet, so
that is what serving costs), then loads the variant again at 2 threads for accuracy and batch
throughput.
The model variants parse without slot value resolution; the ``_values`` row adds it, and its
cost is measured apart, by parsing each request with and without it in one process.
"""

from __future__ import annotations

import json
import os
import pickle
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from voicenlu.data.records import SlotSpan, Utterance
from voicenlu.data.types import DIMENSIONS
from voicenlu.metrics import HEADLINE

WARMUP = 50
BATCH = 64
# Held-out utterances needed to score the variants and recommend one: on fewer, a difference
# of one utterance moves accuracy by a point or more, and "100.00%" says nothing.
MIN_RECOMMEND = 100


def _dump(utterances: list[Utterance]) -> list:
    return [[u.text, u.intent, [[s.slot, s.start, s.end] for s in u.slots]] for u in utterances]


def _load(rows: list) -> list[Utterance]:
    return [Utterance(t, i, tuple(SlotSpan(*s) for s in slots)) for t, i, slots in rows]


# --- the worker side: one variant, one mode, in its own process --------------------------


class _TorchSession:
    """PyTorch behind the onnxruntime session interface, so the Parser runs it unchanged."""

    def __init__(self, model):
        import torch

        self.model, self.torch = model, torch

    def get_inputs(self):
        from types import SimpleNamespace

        return [SimpleNamespace(name=n) for n in ("input_ids", "attention_mask", "token_type_ids")]

    def run(self, names, feed, run_options=None):  # run_options: onnxruntime's, unused here
        with self.torch.no_grad():
            out = self.model(**{k: self.torch.from_numpy(v) for k, v in feed.items()})
        return [out[n].numpy() for n in names]


def _predictor(spec: dict, threads: int, train: list[Utterance]):
    """(predict_batch(texts) -> list[Utterance], predict_one(text), size in bytes)."""
    kind, path = spec["kind"], spec.get("path")
    if kind in ("ort", "torch"):
        from voicenlu.runtime import PRECISIONS, Parser, result_to_utterance

        if kind == "ort":
            parser = Parser.load(
                path, precision=spec["precision"], threads=threads, values=spec.get("values", False)
            )
            size = (Path(path) / PRECISIONS[spec["precision"]]).stat().st_size
        else:
            import torch

            from voicenlu.bundle import read_manifest
            from voicenlu.model import load_torch_model

            torch.set_num_threads(threads)
            model, _, manifest = load_torch_model(Path(path))
            parser = Parser(
                Path(path), read_manifest(path), _TorchSession(model), "torch-fp32", values=False
            )
            size = (Path(path) / "model.safetensors").stat().st_size

        def batch(texts):
            results = parser.parse_batch(texts, threshold=0.0, batch_size=BATCH)
            return [result_to_utterance(r) for r in results]

        return batch, lambda text: parser.parse(text, threshold=0.0), size
    if kind == "pipeline":
        import torch
        from transformers import pipeline

        torch.set_num_threads(threads)
        pipe = pipeline("text-classification", model=path, device=-1)
        size = (Path(path) / "model.safetensors").stat().st_size

        def batch(texts):
            return [
                Utterance(t, r["label"])
                for t, r in zip(texts, pipe(texts, batch_size=BATCH), strict=True)
            ]

        return batch, pipe, size
    if kind == "tfidf":
        from voicenlu.lexical import LexicalModel

        model = LexicalModel.fit(train)

        def batch(texts):
            return [Utterance(t, i) for t, i in zip(texts, model.predict(texts), strict=True)]

        return batch, lambda text: model.predict([text]), len(pickle.dumps(model))
    raise ValueError(kind)


def _peak_rss_mb() -> float:
    """This process's peak RSS. Not getrusage: its ru_maxrss survives exec, so a worker would
    inherit the peak of the driver that forked it; /proc's VmHWM starts afresh."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def values_overhead(bundle: str, precision: str, texts: list[str], runs: int, requests: int):
    """What resolving slot values adds to a single parse, 1 thread: each request is parsed
    with and without it, in turns, by two parsers sharing one model session.

    Both wall-clock time and the process's CPU time are recorded: on a machine shared with
    other jobs, wall-clock time also counts the waits for a core, CPU time only the work
    (on an idle machine, one thread's latency is its CPU time)."""
    from voicenlu.runtime import Parser

    with_values = Parser.load(bundle, precision=precision, threads=1)
    without = Parser(
        with_values.bundle, with_values.manifest, with_values.session, precision, values=False
    )
    for text in texts[:WARMUP]:
        with_values.parse(text), without.parse(text)
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    per_run: dict[tuple, list[float]] = {}
    paired: dict[str, list[float]] = {"wall": [], "cpu": []}
    typed: dict[str, list[float]] = {"wall": [], "cpu": []}  # requests with a dimension slot
    for _ in range(runs):
        times: dict[tuple, list[float]] = {}
        for i in range(requests):
            text = texts[i % len(texts)]
            order = (with_values, without) if i % 2 else (without, with_values)
            spent = {}
            for parser in order:
                started = {name: clock() for name, clock in clocks.items()}
                result = parser.parse(text)
                for name, clock in clocks.items():
                    spent[name, parser is with_values] = (clock() - started[name]) * 1000
            for key, ms in spent.items():
                times.setdefault(key, []).append(ms)
            dimension = any(
                with_values.values.slot_types.get(s["slot"]) in DIMENSIONS for s in result["slots"]
            )
            for name in clocks:
                difference = spent[name, True] - spent[name, False]
                paired[name].append(difference)
                if dimension:
                    typed[name].append(difference)
        for key, values in times.items():
            per_run.setdefault((*key, 0.5), []).append(_percentile(values, 0.5))
            per_run.setdefault((*key, 0.99), []).append(_percentile(values, 0.99))
    found = {q: statistics.median(v) for q, v in per_run.items()}
    out = {"requests_with_dimension_slots": len(typed["wall"]) / len(paired["wall"])}
    for name in clocks:
        prefix = "" if name == "wall" else "cpu_"
        out |= {
            f"{prefix}p50_ms_without": found[name, False, 0.5],
            f"{prefix}p50_ms_with": found[name, True, 0.5],
            f"{prefix}overhead_p50_ms": found[name, True, 0.5] - found[name, False, 0.5],
            f"{prefix}overhead_p99_ms": found[name, True, 0.99] - found[name, False, 0.99],
            f"{prefix}paired_overhead_median_ms": statistics.median(paired[name]),
            f"{prefix}overhead_median_ms_on_those": (
                statistics.median(typed[name]) if typed[name] else None
            ),
        }
    out["load_average"] = os.getloadavg()
    return out


def _worker(spec: dict, runs: int, requests: int) -> dict:
    """One variant's row: latency and peak RSS, then accuracy and throughput, then (for the
    ``values`` row) what slot value resolution adds to a single request."""
    data = json.loads(Path(spec["data"]).read_text(encoding="utf-8"))
    test, train, texts = _load(data["gold"]), _load(data["train"]), data["timing"]
    row = _latency(spec, texts, train, runs, requests)
    row |= _accuracy_and_throughput(spec, test, texts, train, runs)
    if spec.get("values"):
        row["values_overhead"] = values_overhead(
            spec["path"], spec["precision"], texts, runs, requests
        )
    return row


def _latency(spec: dict, texts: list[str], train, runs: int, requests: int) -> dict:
    """Single requests at 1 thread, then the process's peak RSS."""
    _, predict_one, size = _predictor(spec, 1, train)
    for text in texts[:WARMUP]:
        predict_one(text)
    p50s, p99s = [], []
    for _ in range(runs):
        times = []
        for i in range(requests):
            started = time.perf_counter()
            predict_one(texts[i % len(texts)])
            times.append((time.perf_counter() - started) * 1000)
        p50s.append(_percentile(times, 0.5))
        p99s.append(_percentile(times, 0.99))
    return {
        "size_mb": size / 2**20,
        "p50_ms": statistics.median(p50s),
        "p99_ms": statistics.median(p99s),
        "rss_mb": _peak_rss_mb(),
    }


def _accuracy_and_throughput(
    spec: dict, test: list[Utterance], texts: list[str], train, runs: int
) -> dict:
    """The headline metrics on ``test`` (None without it) and the median batch throughput
    on ``texts`` at 2 threads."""
    from voicenlu.metrics import compute_metrics

    predict_batch, _, _ = _predictor(spec, 2, train)
    row = dict.fromkeys(HEADLINE)
    if test:
        pred = predict_batch([u.text for u in test])
        metrics = compute_metrics(test, pred)
        row = {k: metrics[k] for k in HEADLINE}
        if not any(u.slots for u in pred):  # intent-only variants have no slot figures
            row["slot_f1"] = row["exact_match"] = None
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        predict_batch(texts)
        rates.append(len(texts) / (time.perf_counter() - started))
    return row | {"throughput_utt_s": statistics.median(rates)}


# --- the driver side ---------------------------------------------------------------------


def export_hf_classifier(bundle: Path, out_dir: Path) -> Path | None:
    """The bundle's encoder + pooler + intent head as a transformers sequence classifier.

    This is what a user would serve by default with ``pipeline("text-classification")``.
    Only BERT-family encoders have that head layout; others return None.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from voicenlu.model import load_torch_model

    model, _, manifest = load_torch_model(bundle)
    if manifest["encoder_config"]["model_type"] != "bert":
        return None
    config = AutoConfig.for_model(
        "bert",
        **{k: v for k, v in manifest["encoder_config"].items() if k != "model_type"},
        id2label=dict(enumerate(manifest["intents"])),
        label2id={n: i for i, n in enumerate(manifest["intents"])},
    )
    classifier = AutoModelForSequenceClassification.from_config(config)
    state = {f"bert.{k}": v for k, v in model.encoder.state_dict().items()}
    state |= {f"bert.pooler.dense.{k}": v for k, v in model.pooler.state_dict().items()}
    state |= {f"classifier.{k}": v for k, v in model.intent_head.state_dict().items()}
    missing, unexpected = classifier.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in m for m in missing), (missing, unexpected)
    classifier.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(bundle).save_pretrained(out_dir)
    return out_dir


def _measure(spec: dict, runs: int, requests: int) -> dict:
    cmd = [sys.executable, "-m", __name__, json.dumps(spec), str(runs), str(requests)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    if done.returncode:
        raise RuntimeError(f"{spec['name']} failed:\n{done.stderr[-3000:]}")
    return {"name": spec["name"], **json.loads(done.stdout.strip().splitlines()[-1])}


def _machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


def recommend(rows: list[dict], reference: str = "voicenlu_ort_fp32") -> str | None:
    """Fastest slot-filling variant within 0.5 pt intent accuracy and 1 pt slot F1 of fp32;
    None when nothing was scored (too few held-out utterances).

    A model without slots (intent-only data) is held to the intent accuracy alone.
    """
    ref = next(r for r in rows if r["name"] == reference)
    if ref["intent_accuracy"] is None:
        return None
    ok = [
        r
        for r in rows
        if r["name"].startswith(("voicenlu", "pruned"))
        and r["intent_accuracy"] >= ref["intent_accuracy"] - 0.005
        and (ref["slot_f1"] is None or (r["slot_f1"] or 0.0) >= ref["slot_f1"] - 0.01)
    ]
    return min(ok, key=lambda r: r["p50_ms"])["name"]


def run_bench(
    bundle: Path,
    pruned: list[Path],
    out: Path,
    runs: int,
    requests: int,
    gold: list[Utterance],
    train: list[Utterance],
    data: str,
    timing: list[str] | None = None,
) -> dict:
    """Measure every variant: accuracy on ``gold`` (none when empty, and then nothing is
    recommended), speed on ``timing`` (default: ``gold``'s texts); the TF-IDF baseline learns
    ``train``. Flags the recommended variant, writes ``out``.json and ``out``.md; ``data``
    describes what was measured."""
    timing = timing if timing is not None else [u.text for u in gold]
    from voicenlu.bundle import read_manifest
    from voicenlu.experiments.provenance import provenance

    specs = []
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "data.json"
        data_file.write_text(
            json.dumps({"gold": _dump(gold), "train": _dump(train), "timing": timing})
        )
        hf_dir = export_hf_classifier(bundle, Path(tmp) / "hf")
        if hf_dir is not None:
            specs.append({"name": "hf_pipeline_fp32", "kind": "pipeline", "path": str(hf_dir)})
        specs.append({"name": "voicenlu_torch_fp32", "kind": "torch", "path": str(bundle)})
        specs.append(
            {"name": "voicenlu_ort_fp32", "kind": "ort", "path": str(bundle), "precision": "fp32"}
        )
        specs.append(
            {"name": "voicenlu_ort_int8", "kind": "ort", "path": str(bundle), "precision": "int8"}
        )
        specs.append(
            {
                "name": "voicenlu_ort_int8_values",
                "kind": "ort",
                "path": str(bundle),
                "precision": "int8",
                "values": True,
            }
        )
        for p in pruned:
            layers = read_manifest(p)["encoder_config"]["num_hidden_layers"]
            for precision in ("fp32", "int8"):
                specs.append(
                    {
                        "name": f"pruned_{layers}layers_{precision}",
                        "kind": "ort",
                        "path": str(p),
                        "precision": precision,
                    }
                )
        specs.append({"name": "tfidf_logreg", "kind": "tfidf"})
        rows = []
        for spec in specs:
            spec["data"] = str(data_file)
            print(f"measuring {spec['name']}...", file=sys.stderr, flush=True)
            rows.append(_measure(spec, runs, requests))
    best = recommend(rows)
    for row in rows:
        row["recommended"] = row["name"] == best
    result = {
        **provenance(bundle=bundle),
        "data": data,
        "scored": len(gold),
        "recommended": best,
        "machine": _machine(),
        "settings": {
            "runs": runs,
            "requests_per_run": requests,
            "batch": BATCH,
            "latency_threads": 1,
            "throughput_threads": 2,
        },
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(render_table(result))
    return result


def bench_bundle(
    bundle: str | Path,
    pruned: list[Path],
    out: Path | None,
    runs: int,
    requests: int,
    data: str | Path | None = None,
    data_dir=None,
) -> dict:
    """The deployment table, on the bundle's held-out data (or every utterance of ``data``).

    Accuracy is scored, and a variant recommended, only on at least ``MIN_RECOMMEND``
    held-out utterances; with fewer (or none), the variants are timed on the training
    utterances too and nothing is recommended. ``out`` defaults to ``BUNDLE-bench/deploy``,
    beside the bundle.
    """
    # Imported here, not at the top: each worker process imports this module, and its peak
    # RSS is measured.
    from voicenlu.bundle import read_manifest
    from voicenlu.extras import require_extra
    from voicenlu.pipeline import bundle_data

    require_extra("train", "bench")

    manifest = read_manifest(bundle)
    found = bundle_data(manifest, data, data_dir)
    split, gold = ("data", found.test) if data is not None else found.evaluation
    origin = found.source.get("description", "the data")
    if split == "train":
        gold, described = [], f"{len(found.train)} training utterances of {origin}"
    else:
        described = f"{len(gold)} {split} utterances of {origin}"
        if len(gold) < MIN_RECOMMEND:
            described += f" and its {len(found.train)} training utterances"
    bundle = Path(bundle).resolve()
    out = Path(out) if out is not None else bundle.parent / f"{bundle.name}-bench" / "deploy"
    return run_bench(
        bundle,
        [Path(p) for p in pruned],
        out,
        runs,
        requests,
        gold=gold if len(gold) >= MIN_RECOMMEND else [],
        timing=[u.text for u in (gold if len(gold) >= MIN_RECOMMEND else gold + found.train)],
        train=found.train,
        data=described,
    )


def render_table(result: dict) -> str:
    pipeline = next((r for r in result["rows"] if r["name"] == "hf_pipeline_fp32"), None)

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f}"

    lines = [
        f"# Deployment trade-offs on {result.get('data', 'the test set')}",
        "",
        f"Machine: {result['machine']}. Command: `{result['command']}`"
        + (f" at commit {result['commit'][:10]}." if result.get("commit") else "."),
        f"Latency: single requests, tokenisation included, 1 thread, median over "
        f"{result['settings']['runs']} runs of {result['settings']['requests_per_run']} requests. "
        f"Throughput: batches of {BATCH}, padded to their longest, 2 threads. "
        "RSS: peak of a process that loads the variant and serves single requests"
        + (f" ({result['settings']['rss']})" if "rss" in result["settings"] else "")
        + ".",
        "",
        "| variant | intent acc. | slot F1 | exact match | size MB | p50 ms | p99 ms "
        "| utt/s | RSS MB | speed-up p50 | speed-up batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if result.get("recommended", True) is None:
        lines[2:2] = [
            f"Not scored and nothing recommended: fewer than {MIN_RECOMMEND} held-out "
            "utterances (pass --data with more). Speed and memory only.",
            "",
        ]
    for r in result["rows"]:
        up = up_batch = "n/a"
        if pipeline:
            up = f"{pipeline['p50_ms'] / r['p50_ms']:.1f}x"
            up_batch = f"{r['throughput_utt_s'] / pipeline['throughput_utt_s']:.1f}x"
        name = f"**{r['name']}** (recommended)" if r.get("recommended") else r["name"]
        lines.append(
            f"| {name} | {pct(r['intent_accuracy'])} | {pct(r['slot_f1'])} | "
            f"{pct(r['exact_match'])} | {r['size_mb']:.1f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['throughput_utt_s']:.0f} | {r['rss_mb']:.0f} | {up} "
            f"| {up_batch} |"
        )
    for r in result["rows"]:
        if "values_overhead" in r:
            v = r["values_overhead"]
            on_those = v["cpu_overhead_median_ms_on_those"]
            lines += [
                "",
                f"{r['name']}: slot values resolved (Duckling in-process and custom entities). "
                "Each request parsed with and without resolution, in turns, in one process: "
                f"p50 CPU time {v['cpu_p50_ms_without']:.2f} -> {v['cpu_p50_ms_with']:.2f} ms "
                f"(+{v['cpu_overhead_p50_ms']:.2f} ms; wall clock +{v['overhead_p50_ms']:.2f} "
                f"ms), p99 +{v['cpu_overhead_p99_ms']:.2f} ms. "
                f"{100 * v['requests_with_dimension_slots']:.0f}% of the requests have a slot "
                "of a Duckling dimension"
                + (f"; on those resolution takes {on_those:.2f} ms." if on_those else "."),
            ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    spec_arg, runs_arg, requests_arg = sys.argv[1:4]
    print(json.dumps(_worker(json.loads(spec_arg), int(runs_arg), int(requests_arg))))
