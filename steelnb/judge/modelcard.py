"""The model card of an export: ``model.md`` beside ``model.onnx``, written from its metadata.

What the model is, what it was trained on, what it scores on which split (each number with its
95% interval, beside what predicting nothing scores), what it must not be used for, and how to
run it with steelnb or without. Plain Markdown from the metadata dict alone, so that a card and
its ``model.json`` never disagree.

Imports: this module uses ``stats``; ``export`` uses it.
"""

from __future__ import annotations

from typing import Any

from .stats import format_ci


def _scores(metrics: dict[str, Any] | None, note: str) -> list[str]:
    """The scores section: a table of the held-out metrics, or why there is none."""
    if not metrics:
        return [f"No held-out score travels with this model ({note}). Do not rely on it before judging it."]
    split, n = metrics.get("split") or "test", metrics.get("images")
    rows = [("Kaggle metric (mean Dice over image x class)", "kaggle")]
    rows += [
        ("defect Dice (pairs with a defect)", "defect_dice"),
        ("Dice, pooled", "dice"),
        ("IoU, pooled", "iou"),
    ]
    lines = [
        f"On the held-out **{split}** split ({n} images, {metrics.get('defect_pairs')} image-class pairs with a "
        f"defect), TTA {metrics.get('tta')}, post-processing tuned on {metrics.get('n_val_tuned')} validation "
        f"images; 95% bootstrap intervals over images:",
        "",
        f"| measure ({split} split) | value [95% interval] |",
        "| --- | --- |",
    ]
    for name, key in rows:
        if metrics.get(key) is not None and metrics.get(f"{key}_ci95"):
            lines.append(f"| {name} | {format_ci(metrics[key], *metrics[f'{key}_ci95'])} |")
    lines.append(f"| predicting nothing (baseline), Kaggle metric | {metrics['all_empty_kaggle']:.3f} |")
    gain = metrics.get("kaggle_gain_ci95")
    if gain:
        beats = "beats" if metrics.get("gain_real") else "does not clearly beat"
        lines += [
            "",
            f"Gain over predicting nothing (paired): {format_ci(metrics['kaggle_gain'], *gain)}: the model "
            f"{beats} the empty prediction on this split.",
        ]
    return lines


def _data(data: dict[str, Any] | None) -> list[str]:
    """The training-data section; a synthetic model is flagged as such."""
    if not data:
        return ["Not recorded (the run's metrics.json has no data block)."]
    kind = data.get("kind")
    sizes = ", ".join(f"{data.get(f'n_{s}')} {s}" for s in ("train", "val", "test"))
    lines = [
        f"{kind} data (`{data.get('subset')}` subset): {sizes} images; test split `{data.get('test_split')}`."
    ]
    if kind == "synthetic":
        lines.append(
            "**Synthetic images**: this model shows that the pipeline works; its numbers say nothing "
            "about Severstal steel and it must not inspect real sheets."
        )
    return lines


def _model(meta: dict[str, Any], n_members: int) -> list[str]:
    """The model section: members, input, TTA, post-processing and gate."""
    inp, gate = meta["input"], meta.get("gate") or {}
    post = "; ".join(
        f"class {c}: "
        + ("off" if not p["enabled"] else f"threshold {p['threshold']}, min area {p['min_area']}")
        for c, p in meta["postprocess"]["classes"].items()
    )
    return [
        f"- {n_members} member(s), "
        + ("their probabilities averaged, " if n_members > 1 else "")
        + f"input {inp['height']}x{inp['width']} ({inp['resize']}), normalised {inp['normalisation']['formula']}",
        f"- TTA: {meta['tta']['name']}; post-processing (tuned on validation): {post}",
        f"- classifier gate: {'on' if gate.get('active') else 'off'}"
        + (f" (thresholds {gate.get('cls_threshold')})" if gate.get("active") else ""),
    ]


def model_card(meta: dict[str, Any]) -> str:
    """``model.md`` from an export's metadata (``export._metadata`` with the file fields)."""
    members = meta.get("members") or []
    what = " + ".join(f"{m.get('arch')}/{m.get('encoder')}" for m in members) or "unknown"
    code, train = meta.get("exported_by") or {}, meta.get("training_code") or {}
    lines = [
        f"# Model card: {what}",
        "",
        f"Segments the four Severstal defect classes on {meta['image_size'][0]}x{meta['image_size'][1]} grey "
        f"steel sheets. `{meta.get('model_file')}` (ONNX opset {meta.get('opset')}, dynamic batch) with "
        f"`{meta.get('model_file', 'model.onnx').rsplit('.', 1)[0]}.json`, which holds everything below.",
        "",
        "## Model",
        *_model(meta, len(members)),
        "",
        "## Trained on",
        *_data(meta.get("trained_on")),
        "",
        "## Scores",
        *_scores(meta.get("metrics"), meta.get("metrics_note", "")),
        "",
        "## Must not be used for",
        "- images that are not 256x1600 grey steel sheets like Severstal's (other lines, cameras, sizes):"
        " its thresholds were tuned on validation images of one data set; judge it on your own labelled"
        " sheets first",
        "- a pass / fail decision without a person, or defects other than its four classes",
        "- reporting its scores as Severstal results when it was trained on synthetic data",
        "",
        "## Run it",
        f"`steelnb predict --model {meta.get('model_file')} --images SHEETS/ --out predictions/`; without steelnb:"
        " resize, normalise, run each TTA flip through onnxruntime, flip back and average, upsample"
        f" ({meta.get('upsample')}), then apply `postprocess` per class, as `model.json` says.",
        "",
        "## Provenance",
        f"- trained by steelnb at commit {train.get('commit')}; exported by steelnb "
        f"{(code.get('versions') or {}).get('steelnb')} at commit {code.get('commit')}"
        + (" (uncommitted changes)" if code.get("dirty") else "")
        + f", {meta.get('exported_at')}",
        f"- SHA-256 of the graph: `{meta.get('model_sha256')}`; onnxruntime against torch on a probe batch:"
        f" max difference {meta.get('export_parity_max_diff', float('nan')):.1e}",
    ]
    return "\n".join(lines) + "\n"
