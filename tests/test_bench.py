"""The trade-off table's choice of a recommended variant, and its rendering."""

from __future__ import annotations

from voicenlu.experiments.bench import recommend, render_table


def row(name, intent, slot, p50, **extra):
    return {
        "name": name,
        "intent_accuracy": intent,
        "slot_f1": slot,
        "exact_match": slot,
        "size_mb": 10.0,
        "p50_ms": p50,
        "p99_ms": 2 * p50,
        "throughput_utt_s": 100 / p50,
        "rss_mb": 100.0,
        **extra,
    }


ROWS = [
    row("hf_pipeline_fp32", 0.98, None, 17.0),
    row("voicenlu_ort_fp32", 0.985, 0.955, 6.0),
    row("voicenlu_ort_int8", 0.984, 0.951, 3.5),
    row("pruned_3layers_int8", 0.983, 0.930, 1.5),  # too much slot F1 lost
    row("pruned_4layers_int8", 0.982, 0.948, 2.0),
    row("tfidf_logreg", 0.977, None, 0.5),  # fastest, but no slots
]


def test_recommends_the_fastest_variant_within_tolerance():
    assert recommend(ROWS) == "pruned_4layers_int8"


def test_table_shows_speedups_against_the_pipeline():
    rows = [dict(r, recommended=r["name"] == "pruned_4layers_int8") for r in ROWS]
    table = render_table(
        {
            "machine": "test cpu",
            "command": "voicenlu bench b",
            "settings": {"runs": 3, "requests_per_run": 100},
            "rows": rows,
        }
    )
    assert "**pruned_4layers_int8** (recommended)" in table
    assert "| 8.5x |" in table  # 17 ms / 2 ms
    assert table.count("\n| ") == len(ROWS) + 1


def test_values_overhead_is_measured_per_request_pair(tiny_bundle, tiny_data):
    from voicenlu.experiments.bench import values_overhead

    texts = [u.text for u in tiny_data.test][:30]
    found = values_overhead(str(tiny_bundle), "fp32", texts, runs=1, requests=30)
    assert 0 < found["cpu_p50_ms_without"] and 0 < found["p50_ms_without"]
    assert 0 <= found["requests_with_dimension_slots"] <= 1
    # The same requests, so the overhead is a difference of two like times, not a total.
    assert abs(found["cpu_overhead_p50_ms"]) < found["cpu_p50_ms_with"]
    assert len(found["load_average"]) == 3
