"""Admin pages, the public model card and the Markdown renderer."""

from __future__ import annotations

from typing import Any

from cds.inbox.admin import fmt_duration
from cds.inbox.present import render_markdown

from . import factory


def test_runs_page(admin_client: Any, data: Any) -> None:
    html = admin_client.get("/inbox/admin/runs").get_data(as_text=True)
    assert "3 runs recorded" in html
    assert "4.0 s" not in html and "4 min 00 s" in html  # 4-minute runs
    assert '<strong class="bad">1</strong>' in html  # the failed patient of the last run
    assert html.index("run-2026-11-20") < html.index("run-2026-11-13")  # newest first


def test_run_detail_shows_failures_with_reasons(admin_client: Any, data: Any) -> None:
    run = data["runs"][-1]
    html = admin_client.get(f"/inbox/admin/runs/{run.id}").get_data(as_text=True)
    assert "FhirError: Observation/x unreadable (HTTP 500)" in html
    assert "p-bad" in html
    assert ">FhirError<" in html  # grouped by reason
    assert '<th scope="row">inference</th><td class="num">30.2 s</td>' in html
    assert "n_skipped_already_done" in html and "timings_s" not in html  # summary
    assert "mprtm 1.0.0" in html
    assert admin_client.get("/inbox/admin/runs/999").status_code == 404


def test_model_page_and_card(admin_client: Any, data: Any) -> None:
    html = admin_client.get("/inbox/admin/model").get_data(as_text=True)
    assert "mprtm 1.0.0" in html
    assert "<strong>synthetic</strong>" in html and "<table>" in html
    assert "auroc_death" in html and "0.81" in html


def test_model_in_use_follows_the_latest_run(admin_client: Any, data: Any, dbs: Any) -> None:
    newer = factory.model_version(dbs, "2.0.0", card="# v2")
    dbs.commit()
    html = admin_client.get("/inbox/admin/model").get_data(as_text=True)
    assert '<h2 id="model-h">mprtm 1.0.0</h2>' in html  # the last run used 1.0.0
    assert "2.0.0" in html  # listed among versions
    assert newer.id


def test_public_model_card(app: Any, data: Any) -> None:
    resp = app.test_client().get("/model-card")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert "<h1>M-PRTM 1.0</h1>" in html and "Model card: mprtm 1.0.0" in html


def test_public_model_card_without_model(app: Any) -> None:
    html = app.test_client().get("/model-card").get_data(as_text=True)
    assert "No model card has been published yet." in html


def test_markdown_is_rendered_safely() -> None:
    html = str(
        render_markdown(
            "# Title\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n"
            "[click](javascript:alert(1)) [ok](https://example.org/card)\n\n"
            "| a | b |\n|---|---|\n| 1 | 2 |\n"
        )
    )
    assert "<h1>Title</h1>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<img" not in html
    assert 'href="javascript:' not in html
    assert '<a href="https://example.org/card">ok</a>' in html
    assert "<table>" in html


def test_feedback_rates_by_reason(admin_client: Any, data: Any) -> None:
    html = admin_client.get("/inbox/admin/feedback").get_data(as_text=True)
    assert "4 cards issued; feedback on 4 (100% of issued)" in html
    assert "Not clinically relevant" in html and "Already managed" in html
    # 2 of 4 accepted, 2 of 4 overridden; each reason is half of the overrides.
    assert html.count(">50.0%<") >= 4
    assert "mprtm-patient-view" in html
    recent = admin_client.get("/inbox/admin/feedback?days=7").get_data(as_text=True)
    assert "feedback on 4" in recent


def test_feedback_empty(admin_client: Any, dbs: Any) -> None:
    dbs.query(factory.CardFeedback).delete()
    dbs.query(factory.IssuedCard).delete()
    dbs.commit()
    html = admin_client.get("/inbox/admin/feedback").get_data(as_text=True)
    assert "0 cards issued" in html and "No overrides." in html


def test_fmt_duration() -> None:
    assert fmt_duration(None) == "—"
    assert fmt_duration(3.25) == "3.2 s"
    assert fmt_duration(125) == "2 min 05 s"
    assert fmt_duration(3 * 3600 + 61) == "3 h 01 min"


def test_model_metrics_are_tables_not_a_dict(admin_client: Any, dbs: Any, data: Any) -> None:
    """Nested validation metrics (as training stores them) read as tables by outcome."""
    mv = dbs.get(type(data["model"]), data["model"].id)
    mv.metrics = {
        "val": {
            "fusion": {
                "death": {"auroc": 0.81234, "brier": 0.1, "ece": 0.02},
                "macce": {"auroc": 0.7, "brier": 0.2, "ece": 0.03},
            },
            "segmentation": {"dice_myocardium": 0.61, "dice_enhancement": 0.4},
        }
    }
    dbs.commit()
    html = admin_client.get("/inbox/admin/model").get_data(as_text=True)
    assert "{'" not in html and "{&#39;" not in html
    assert "<caption>val › fusion</caption>" in html
    assert '<th scope="row">All-cause death</th><td class="num">0.812</td>' in html
    assert '<th scope="row">dice_myocardium</th><td class="num">0.61</td>' in html


def test_root_sends_to_the_inbox_and_there_is_a_favicon(app: Any) -> None:
    client = app.test_client()
    root = client.get("/")
    assert root.status_code == 302 and root.headers["Location"].endswith("/inbox/")
    icon = client.get("/favicon.ico")
    assert icon.status_code == 301
    with client.get(icon.headers["Location"]) as svg:  # a file response: closed after use
        assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    login = client.get("/inbox/login").get_data(as_text=True)
    assert 'rel="icon"' in login and "favicon.svg" in login
