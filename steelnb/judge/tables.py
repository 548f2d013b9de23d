"""Result tables rendered for a person: snake_case columns and keys turned into the labels a
reader sees ("tuned on validation", "gain over all-empty [95% CI]").

The functions that compute (``evaluation.compare_variants`` and its kin) return tables whose
columns and values are keys a notebook or test can look up; only this module spells the labels,
so that a label can change without breaking a lookup.

Imports: this module uses ``comparison`` (``ci_text``, the "v [low, high]" text); none of the
computing modules uses it.
"""

from __future__ import annotations

import pandas as pd

from .comparison import ci_text

__all__ = ["POSTPROCESS_LABELS", "variant_label", "variants_paired_table", "variants_table"]

#: what each ``postprocess`` key of ``evaluation.compare_variants``' table is called on the page
POSTPROCESS_LABELS = {
    "raw": "raw (0.5)",
    "tuned": "tuned on validation",
    "all_empty": "all-empty prediction",
}
#: the interval columns of ``variants_table``: (label, key of the block)
_INTERVALS = (("Kaggle", "kaggle"), ("gain over all-empty", "kaggle_gain"), ("defect Dice", "defect_dice"))


def variant_label(tta: str, postprocess: str) -> str:
    """A variant of ``compare_variants`` in words: "none TTA, raw (0.5)"."""
    return f"{tta} TTA, {POSTPROCESS_LABELS[postprocess]}"


def variants_table(table: pd.DataFrame) -> pd.DataFrame:
    """``compare_variants``' table as shown: tta, postprocess (its label), images, and the Kaggle
    metric, the gain over all-empty and defect Dice each as "v [low, high]"."""
    records = table.to_dict("records")
    shown = table.assign(
        postprocess=table["postprocess"].map(POSTPROCESS_LABELS),
        **{f"{name} [95% CI]": [ci_text(r, key) for r in records] for name, key in _INTERVALS},
    )
    return shown[["tta", "postprocess", "images", *(f"{name} [95% CI]" for name, _ in _INTERVALS)]]


def variants_paired_table(paired: pd.DataFrame) -> pd.DataFrame:
    """``compare_variants``' paired differences as shown: variant, against, the Kaggle difference
    as "v [low, high]", Holm p and verdict."""
    columns = ["variant", "against", "Kaggle difference [95% CI]", "Holm p", "verdict"]
    if paired.empty:
        return pd.DataFrame(columns=columns)
    records = paired.to_dict("records")
    return pd.DataFrame(
        {
            "variant": [variant_label(r["tta"], r["postprocess"]) for r in records],
            "against": [variant_label(r["against_tta"], r["against_postprocess"]) for r in records],
            "Kaggle difference [95% CI]": [ci_text(r, "kaggle_diff") for r in records],
            "Holm p": paired["p_holm"].to_numpy(),
            "verdict": paired["verdict"].to_numpy(),
        },
        columns=columns,
    )
