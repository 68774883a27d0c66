"""The HTML run report, written from a real simulated run analysed by the real engines."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq
import yaml
import zarr

from livescope.record import read_frames, relabel_for_ctc, write_ctc
from livescope.schema import AddEvents, DecisionAck, HardwareProfile, LivescopeError
from livescope.scope import demo_sequence, run_simulated
from livescope.view import write_report

ROOT = Path(__file__).resolve().parents[2]
POSITIONS = 2
TIMEPOINTS = 4
SECTIONS = ("summary", "cells", "lineage", "decisions", "latency", "drops", "fields",
            "closeups", "truth")  # fmt: skip
# cells over time, lineage and thumbnails per position; one decisions timeline, one latency grid
EXPECTED_PLOTS = 3 * POSITIONS + 2
NASTY_REASON = "<b>light dose</b> budget & 'rate' exceeded"
CLASSES = ("interphase", "prophase", "metaphase", "anaphase", "apoptotic")


def _engine_sha(task: str, name: str) -> str:
    card = yaml.safe_load((ROOT / "engines" / task / name / "card.yaml").read_text())
    return str(card["sha256"])


def _analyse(out: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Write results/ as the analysis worker does, from the recorded frames."""
    from livescope.pipeline import FrameAnalyzer

    frames = read_frames(out)
    root = zarr.open_group(out / "data.ome.zarr", mode="r")
    series = {g.attrs["livescope"]["position"]: g["0"] for _, g in root.groups()}
    channels = summary["channels"]
    c_dapi = channels.index("DAPI")
    seq_of = {
        (f["position"], f["index"]["t"]): (f["seq"], f["sample_time_s"], f["pixel_size_um"])
        for f in frames
        if f["channel"] == "DAPI"
    }
    results = out / "results"
    results.mkdir()
    cell_rows: list[list[Any]] = []
    latency: list[dict[str, Any]] = []
    policy: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    triggers: list[dict[str, Any]] = []
    with FrameAnalyzer(states="cell-state") as fa:
        for p, pos in enumerate(summary["positions"]):
            id_frames = []
            for t in range(TIMEPOINTS):
                seq, sample_s, px = seq_of[(pos, t)]
                image = np.asarray(series[pos][t, c_dapi, 0])
                res = fa.analyse(fluorescence=image, position=pos, pixel_size_um=px)
                assert res.labels is not None
                assert res.tracks is not None
                assert res.states is not None
                lab = res.labels.astype(np.int64)
                n = int(lab.max()) + 1
                area = np.bincount(lab.ravel(), minlength=n)
                yy, xx = np.indices(lab.shape)
                cy = np.bincount(lab.ravel(), yy.ravel(), n) / np.maximum(area, 1)
                cx = np.bincount(lab.ravel(), xx.ravel(), n) / np.maximum(area, 1)
                mean = np.bincount(lab.ravel(), image.ravel().astype(float), n) / np.maximum(
                    area, 1
                )
                lineage = fa.trackers[pos].lineage
                k_of = {int(i): k for k, i in enumerate(res.states.ids.tolist())}
                p_mit = res.states.p_mitosis
                best: tuple[float, dict[str, Any]] | None = None
                for row in res.cell_table():
                    lbl, track = row["label"], row["track"]
                    probs = res.states.probs[k_of[lbl]]
                    state = row.get("state", "") if t != 1 else ""  # an unclassified field
                    cell_rows.append(
                        [pos, t, seq, sample_s, lbl, track, lineage.get(track, 0)]
                        + [round(cy[lbl], 1), round(cx[lbl], 1), int(area[lbl])]
                        + [round(mean[lbl], 1), state, row.get("p_mitosis", "")]
                        + [round(float(v), 4) for v in probs]
                    )
                    cell = {"track": track, "y": float(cy[lbl]), "x": float(cx[lbl])}
                    pm = float(p_mit[k_of[lbl]])
                    if best is None or pm > best[0]:
                        best = (pm, cell)
                lut = np.zeros(n, np.int64)
                mapping = res.tracks.mapping()
                for lbl, track in mapping.items():
                    lut[lbl] = track
                id_frames.append(lut[lab])
                t0 = time.perf_counter()
                if best is not None and t in (1, 3):
                    # a mitosis rule fires on the most mitotic cell; outcomes vary by field
                    if t == 1:
                        verdict, stage, reason = "accepted", "agent", ""
                    elif p == 0:
                        verdict, stage, reason = "rejected", "agent", f"position {pos} is stopped"
                    else:
                        verdict, stage, reason = "rejected", "guardrail", NASTY_REASON
                    d = AddEvents(
                        run_id=summary["run_id"],
                        seq=seq,
                        rule="mitosis-burst",
                        inputs={"p_mitosis": round(best[0], 4), "track": best[1]["track"]},
                        events=(useq.MDAEvent(index={"t": t, "p": p, "c": c_dapi, "z": 0}),),
                    )
                    policy.append(
                        {
                            "rule": "mitosis-burst",
                            "trigger": "p_mitosis",
                            "position": pos,
                            "t": t,
                            "seq": seq,
                            "sample_time_s": sample_s,
                            **best[1],
                            "decision": d.model_dump(mode="json"),
                            "verdict": verdict,
                            "stage": stage,
                            "reason": reason,
                        }
                    )
                    if stage == "agent":
                        ack = DecisionAck(
                            decision_id=d.decision_id,
                            run_id=d.run_id,
                            type=d.type,
                            accepted=verdict == "accepted",
                            reason=reason,
                            seq=seq,
                            events_added=int(verdict == "accepted"),
                        )
                        decisions.append(
                            {"decision": d.model_dump(mode="json"), "ack": ack.model_dump()}
                        )
                    triggers.append(
                        {
                            "position": pos,
                            "t": t,
                            "sample_time_s": sample_s,
                            **best[1],
                            "cell_id": None,
                            "ok": best[0] >= 0.5,
                        }
                    )
                if t == 2:
                    policy.append(
                        {
                            "rule": "focus-check",
                            "trigger": "sharpness",
                            "position": pos,
                            "t": t,
                            "seq": seq,
                            "sample_time_s": sample_s,
                            "track": None,
                            "y": None,
                            "x": None,
                            "decision": None,
                            "verdict": "error",
                            "stage": "policy",
                            "reason": "ZeroDivisionError: float division by zero",
                        }
                    )
                ms = {
                    "camera_to_received": 0.4 + 0.1 * t,
                    "queue_wait": 0.2,
                    **res.ms,
                    "policy": 1000 * (time.perf_counter() - t0),
                }
                ms["end_to_end"] = sum(ms.values())
                latency.append({"position": pos, "t": t, "seq": seq, "ms": ms})
            ctc_frames, tracks, _ = relabel_for_ctc(id_frames, fa.trackers[pos].lineage)
            write_ctc(results / "ctc" / pos, ctc_frames, tracks, kind="res")
    header = "position,t,seq,sample_time_s,label,track,parent,y,x,area,intensity,state,p_mitosis"
    with (results / "cells.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([*header.split(","), *(f"p_{c}" for c in CLASSES)])
        w.writerows(cell_rows)
    for name, rows in (("policy.jsonl", policy), ("latency.jsonl", latency)):
        (results / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    with (out / "decisions.jsonl").open("a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in decisions)

    last_s = max(f["sample_time_s"] for f in frames)
    mitoses = []
    for pos in summary["positions"]:
        gt_cells = json.loads((out / "ground_truth" / pos / "cells.json").read_text())["tracks"]
        onsets = {
            c["cell_id"]: c["mitosis_onset_s"]
            for c in gt_cells.values()
            if c["mitosis_onset_s"] is not None and 0 <= c["mitosis_onset_s"] <= last_s
        }
        mitoses += [
            {"position": pos, "cell_id": i, "onset_s": s, "triggered": False, "delay_s": None}
            for i, s in sorted(onsets.items())
        ]
    e2e = np.asarray([r["ms"]["end_to_end"] for r in latency])
    accepted = sum(r["verdict"] == "accepted" for r in policy)
    summary.update(
        {
            "frames_analysed": len(latency),
            "decisions": {"accepted": accepted, "rejected": len(policy) - accepted},
            "trigger_precision": sum(t["ok"] for t in triggers) / len(triggers),
            "trigger_recall": None,
            "mitosis_to_trigger_s": None,
            "latency_ms": {
                "end_to_end": {
                    "p50": float(np.percentile(e2e, 50)),
                    "p99": float(np.percentile(e2e, 99)),
                }
            },
            "dropped_analysis_frames": 0,
            "dropped_recorded_frames": 0,
            "worker_restarts": 2,
            "worker_hangs": 1,
            "policies_disabled": [{"rule": "focus-check", "error": "ZeroDivisionError"}],
            "engines": {
                "nuclei-unet": _engine_sha("segmentation", "nuclei-unet"),
                "cell-state": _engine_sha("classification", "cell-state"),
            },
            "evaluation": {"triggers": triggers, "mitoses": mitoses},
        }
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


@pytest.fixture(scope="module")
def analysed_run(
    tmp_path_factory: pytest.TempPathFactory, sim_profile: HardwareProfile
) -> tuple[Path, Path, float]:
    """A real simulated run with results/ (engines, tracker, CTC), and its report."""
    out = tmp_path_factory.mktemp("report") / "run"
    seq = demo_sequence(sim_profile, timepoints=TIMEPOINTS, positions=POSITIONS)
    summary = run_simulated(sim_profile, seq, out, seed=3)
    _analyse(out, summary)
    t0 = time.perf_counter()
    report = write_report(out)
    return out, report, time.perf_counter() - t0


def _attributes(page: str, name: str) -> list[str]:
    return re.findall(rf'\b{name}\s*=\s*"([^"]*)"', page)


def test_report_is_one_self_contained_file(analysed_run: tuple[Path, Path, float]) -> None:
    out, report, _ = analysed_run
    assert report == out / "report.html"
    page = report.read_text(encoding="utf-8")
    srcs, hrefs = _attributes(page, "src"), _attributes(page, "href")
    assert len(srcs) == EXPECTED_PLOTS
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(h.startswith(("#", "data:")) for h in hrefs)
    assert not re.search(r"(?:src|href)\s*=\s*['\"]?\s*(?:https?:)?//", page)
    assert "<script" not in page.lower()
    assert "@import" not in page
    assert "url(" not in page
    for s in srcs:
        png = base64.b64decode(s.split(",", 1)[1], validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_report_has_every_section(analysed_run: tuple[Path, Path, float]) -> None:
    out, report, _ = analysed_run
    page = report.read_text(encoding="utf-8")
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in page
        assert f'href="#{anchor}"' in page
    assert page.count('<img class="plot"') == EXPECTED_PLOTS
    assert "mitosis-burst" in page
    assert "focus-check" in page
    assert "rejected (guardrail)" in page
    # the timeline's caption says the markers it shows, and only those
    for said in ("red crosses rejected by a guardrail", "black triangles rule errors"):
        assert said in page
    assert "plus signs not sent" not in page  # (no firing of this run came after its end)
    assert "nuclei-unet" in page
    assert "cell-state" in page
    # the worker's restarts and, of them, those taken for hung (in both tables)
    assert page.count("taken for hung</th><td>2 · 1</td>") == 2
    # what became of the plan's events (the agent's count, a simulated run's)
    ev = json.loads((out / "summary.json").read_text())["events"]
    assert ev["planned"] > 0
    taken = f"{ev['planned_taken']} · {ev['planned_stopped']} of {ev['planned']}"
    assert f"Planned events: taken · stopped of all</th><td>{taken}</td>" in page
    # autofocus events that failed (this simulated run has none; its agent counts them)
    assert "Autofocus events that failed (frames kept)</th><td>0</td>" in page
    assert 'class="missing"' not in page  # every part of this run is there


def test_report_escapes_what_it_inserts(analysed_run: tuple[Path, Path, float]) -> None:
    _, report, _ = analysed_run
    page = report.read_text(encoding="utf-8")
    assert NASTY_REASON not in page
    assert "&lt;b&gt;light dose&lt;/b&gt; budget &amp; &#x27;rate&#x27; exceeded" in page


def test_run_without_analysis_says_so(
    analysed_run: tuple[Path, Path, float], tmp_path: Path
) -> None:
    out, _, _ = analysed_run
    bare = tmp_path / "bare"
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("results", "report.html"))
    summary = json.loads((bare / "summary.json").read_text())
    for key in ("evaluation", "latency_ms", "engines", "frames_analysed"):
        summary.pop(key)
    (bare / "summary.json").write_text(json.dumps(summary))
    target = tmp_path / "elsewhere" / "r.html"
    assert write_report(bare, out=target) == target
    page = target.read_text(encoding="utf-8")
    assert "Analysis is missing" in page
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in page
    assert "No cell table: no analysis results (results/ is missing)" in page
    assert "No lineage: no analysis results" in page
    assert "No per-field latencies: no analysis results" in page
    assert "but its triggers were not scored" in page
    # the recording is still shown: one thumbnail row per position, no contours
    assert page.count('<img class="plot"') == POSITIONS + 1  # + the agent's decisions
    assert not (bare / "report.html").exists()


def test_triggers_not_scored_say_why_and_the_tracks_still_show(
    analysed_run: tuple[Path, Path, float], tmp_path: Path
) -> None:
    out, _, _ = analysed_run
    run = tmp_path / "run"
    shutil.copytree(out, run, ignore=shutil.ignore_patterns("report.html"))
    summary = json.loads((run / "summary.json").read_text())
    summary["evaluation"] = {"precision": None, "recall": None, "mitosis_to_trigger_s": None,
                             "error": "OSError: lineage.json <unreadable>"}  # fmt: skip
    # (p2: a hand-edited summary whose tolerance is no number)
    summary["tracking"] = {"p0": {"tra": 0.9812, "det": 0.99, "lnk": 0.97, "div_f1": 1.0,
                                  "tracks": 12, "divisions_matched": 1, "divisions_true": 1,
                                  "divisions_found": 1, "div_tolerance": 2},
                           "p1": {"error": "no masks written"},
                           "p2": {"tra": 0.97, "div_tolerance": [1]}}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    page = write_report(run).read_text(encoding="utf-8")
    assert "The triggers were not scored: OSError: lineage.json &lt;unreadable&gt;." in page
    assert "0 of 0 triggers" not in page
    assert '<td class="num">0.981</td>' in page
    assert "1 of 1 true (1 found)" in page
    assert "divisions matched within 2 frames" in page  # the tolerance they were scored at
    assert "not scored: no masks written" in page


def test_not_a_run_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LivescopeError, match=r"not a run folder: it holds no frames\.jsonl"):
        write_report(tmp_path)


# ------------------------------------------------------------------ in a real browser


def _chromium() -> tuple[str, str]:
    """System Chromium and its driver (Debian: apt-get install chromium chromium-driver)."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e .[dev])")
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    browser = next((p for n in names if (p := shutil.which(n))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(
            "no Chromium and chromedriver on PATH (.ci/run installs Debian's chromium and "
            "chromium-driver; nothing is downloaded at test time)"
        )
    return browser, driver


def open_in_chromium(report: Path) -> tuple[list[list[Any]], list[dict[str, Any]], str]:
    """Open ``report`` in headless Chromium: its images, console errors/warnings and title."""
    browser, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Chromium's profile and its singleton socket's folder go in a folder of the test's own
    # (TMPDIR for the browser), removed afterwards: in the temp folder they were left behind
    with tempfile.TemporaryDirectory(prefix="chromium-test-", ignore_cleanup_errors=True) as tmp:
        opts = webdriver.ChromeOptions()
        opts.binary_location = browser
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            opts.add_argument(arg)
        opts.add_argument(f"--user-data-dir={os.path.join(tmp, 'profile')}")
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(driver_path, env={**os.environ, "TMPDIR": tmp})
        driver = webdriver.Chrome(options=opts, service=service)
        try:
            driver.get(report.as_uri())
            images = driver.execute_script(
                "return Array.from(document.images).map("
                "i => [i.className, i.complete, i.naturalWidth, i.naturalHeight])"
            )
            errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
            title = driver.title
        finally:
            driver.quit()
    return images, errors, title


def test_report_renders_in_headless_chromium(
    analysed_run: tuple[Path, Path, float],
) -> None:
    _, report, _ = analysed_run
    images, errors, title = open_in_chromium(report)
    assert errors == []
    assert title.startswith("Run report")
    assert len(images) == EXPECTED_PLOTS
    for cls, complete, width, height in images:
        assert cls == "plot"
        assert complete
        assert width > 0
        assert height > 0


def test_the_latency_table_lists_the_workers_stages_in_their_order() -> None:
    from livescope.pipeline import LATENCY_STAGES
    from livescope.view._report import _LATENCY_ORDER

    assert _LATENCY_ORDER == LATENCY_STAGES


def test_each_firing_outcome_has_a_marker_and_a_caption() -> None:
    from livescope.view._report_data import firing_outcome
    from livescope.view._report_plots import STATUS_CAPTION, STATUS_STYLE

    assert list(STATUS_CAPTION) == list(STATUS_STYLE)  # each marker said in the captions
    # (verdict, stage) as the policy log writes them
    logged = {
        ("accepted", ""): "accepted", ("shared", "shared"): "shared",
        ("recorded", "record"): "recorded", ("rejected", "guardrail"): "rejected (guardrail)",
        ("rejected", "agent"): "rejected (agent)",
        # a shared firing whose sub-sequence was refused, or not answered in time
        ("rejected", "shared"): "rejected (shared)", ("rejected", "unanswered"): "unanswered",
        ("not_sent", "not_sent"): "not sent",  # made after the run ended
    }  # fmt: skip
    for (verdict, stage), outcome in logged.items():
        assert firing_outcome(verdict, stage) == outcome
        assert outcome in STATUS_STYLE
