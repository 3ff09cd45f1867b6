# ruff: noqa: E501, T201
"""Draws docs/img/architecture.png: `python docs/img/architecture.py` (matplotlib, Agg)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

# Okabe-Ito colours, as in the inbox charts.
HOSP = "#E69F00"
OURS = "#56B4E9"
MODEL = "#009E73"
STORE = "#F0E442"
USER = "#CC79A7"

fig, ax = plt.subplots(figsize=(13, 7.2), dpi=110)
ax.set_xlim(0, 130)
ax.set_ylim(0, 72)
ax.axis("off")


def box(x, y, w, h, text, colour, size=9.5, bold_first=True):
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0.4,rounding_size=1.2",
            facecolor=colour,
            edgecolor="#333333",
            linewidth=1.1,
            alpha=0.9,
        )
    )
    lines = text.split("\n")
    if bold_first:
        ax.text(
            x + w / 2,
            y + h - 2.2,
            lines[0],
            ha="center",
            va="top",
            fontsize=size + 0.5,
            fontweight="bold",
        )
        ax.text(
            x + w / 2,
            y + h - 5.4,
            "\n".join(lines[1:]),
            ha="center",
            va="top",
            fontsize=size - 1,
            linespacing=1.35,
        )
    else:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)
    return (x, y, w, h)


def arrow(p, q, label="", colour="#333333", style="-|>", ls="-", lpos=0.5, dy=1.2, rad=0.0):
    ax.add_patch(
        FancyArrowPatch(
            p,
            q,
            arrowstyle=style,
            mutation_scale=14,
            color=colour,
            linewidth=1.4,
            linestyle=ls,
            connectionstyle=f"arc3,rad={rad}",
        )
    )
    if label:
        mx = p[0] + (q[0] - p[0]) * lpos
        my = p[1] + (q[1] - p[1]) * lpos
        ax.text(
            mx,
            my + dy,
            label,
            ha="center",
            va="bottom",
            fontsize=7.8,
            color="#222222",
            bbox=dict(facecolor="white", edgecolor="none", alpha=0.85, pad=0.6),
        )


# Hospital systems (left)
ax.text(12, 70, "Hospital", ha="center", fontsize=11, fontweight="bold")
box(
    1,
    49,
    22,
    17,
    "EHR FHIR R4 server\nPatient, Observation,\nCondition, Medication*,\nDocumentReference,\nImagingStudy",
    HOSP,
)
box(1, 27, 22, 14, "PACS\nLGE cardiac MRI\nDIMSE (C-FIND,\nC-GET / C-MOVE) or\nDICOMweb", HOSP)
box(
    1,
    4,
    22,
    15,
    "EHR (clinician UI)\nCDS Hooks client:\npatient-view,\nencounter-discharge;\nSMART launch",
    USER,
)

# M-PRTM (middle)
ax.text(68, 70, "M-PRTM CDS", ha="center", fontsize=11, fontweight="bold")
ax.add_patch(
    FancyBboxPatch(
        (29, 1.5),
        78,
        66,
        boxstyle="round,pad=0.3,rounding_size=2",
        facecolor="#F4F9FC",
        edgecolor="#888888",
        linewidth=1,
        linestyle="--",
    )
)
box(
    31,
    47,
    22,
    16,
    "connectors/\nFHIR REST + SMART\nBackend Services,\nBulk $export, NDJSON;\nDIMSE, DICOMweb",
    OURS,
)
box(
    58,
    47,
    21,
    16,
    "pipeline\ncds/pipeline.py:\nLOINC/UCUM, SNOMED,\nICD-10, drug classes\n-> features, text,\nLGE volume",
    OURS,
)
box(
    84,
    47,
    21,
    16,
    "model/\nM-PRTM: DAE-Former\nsegmentation, BERT\ntext, numeric MLP,\nattention fusion\n-> 1-year risks",
    MODEL,
)
box(
    58,
    25,
    47,
    15,
    "nightly batch  (mprtm scheduler / batch run)\nlocal or Celery workers (Redis/RabbitMQ, GPU optional);\nresumable per patient; alert rules; RiskAssessment\nby conditional update + model Device",
    OURS,
)
box(
    31,
    25,
    22,
    15,
    "database\nPostgreSQL (SQLite\nfor the demo):\npredictions, alerts,\naudit, image features",
    STORE,
)
box(
    31,
    4,
    34,
    15,
    "web app  (mprtm serve)\nCDS Hooks service: JWT-verified,\nnightly result or on-demand\nscore -> risk card\n/.well-known/jwks.json",
    OURS,
)
box(
    70,
    4,
    35,
    15,
    "alert inbox  (/inbox/)\nclinicians and admins:\nalerts, patient page, risk trend,\nmodality weights, fibrosis overlay,\naudited actions",
    OURS,
)

# Users (right)
ax.text(119, 70, "People", ha="center", fontsize=11, fontweight="bold")
box(110, 4, 19, 15, "Clinicians\nbrowser, or\nlaunched from\nthe EHR", USER)
box(110, 47, 19, 16, "Hospital IT\nconfig.toml +\nMPRTM_* env;\nsystemd units", USER)

# data flow
arrow((23, 60), (31, 60), "reads")
arrow((31, 53), (23, 53), "write-back", colour="#B35900")
arrow((23, 34), (31, 51), "images", lpos=0.35, dy=0.5)
arrow((53, 55), (58, 55))
arrow((79, 55), (84, 55))
arrow((94, 47), (94, 40), "predictions", dy=0, lpos=0.5)
arrow((58, 32), (53, 32), "store", dy=0.6)
arrow(
    (66, 40), (48, 47), "RiskAssessment\n(PUT by identifier)", colour="#B35900", lpos=0.5, dy=-1.0
)
arrow((23, 13), (31, 13), "hook call", dy=0.6)
arrow((31, 9), (23, 9), "card", dy=0.6)
arrow((42, 25), (42, 19), "", style="<|-|>")
arrow((53, 27), (76, 19), "alerts", style="-|>", lpos=0.55, dy=-0.5)
arrow((110, 11.5), (105, 11.5), "", style="<|-|>")
arrow(
    (23, 6), (70, 6.5), "SMART launch (card link)", colour="#7A3A63", lpos=0.75, dy=-3.8, rad=0.08
)

ax.text(
    65,
    -0.4,
    "Arrows: data flow. The web app never contacts the PACS; image features come "
    "from the nightly batch.",
    ha="center",
    fontsize=8,
    color="#444444",
)
out = Path(__file__).with_name("architecture.png")
fig.savefig(out, bbox_inches="tight", facecolor="white")
print(f"wrote {out}")
