"""The file names of a training run's folder, each spelled here once.

``runfolder.RunFolder`` is the type that reads and writes them; this module holds only the
names, so that the modules below it (``models`` finds a folder's checkpoint, ``postprocess``
its tuned parameters, ``ensemble`` its members) can use them without importing the type.
"""

from __future__ import annotations

#: the run's ``TrainConfig`` (``TrainConfig.to_yaml``)
CONFIG_FILE = "config.yaml"
#: what the run saw and scored: history, best epoch, data and code blocks, the test block
METRICS_FILE = "metrics.json"
#: the train / validation / test image ids the run was trained on, written at fit
SPLITS_FILE = "splits.json"
#: one row per (test image, class): tp / fp / fn pixels, raw and post-processed
SCORES_FILE = "test_scores.csv"
#: post-processing tuned on the run's validation images
POSTPROCESS_FILE = "postprocess.yaml"
#: the best epoch's checkpoint (by ``config.select_by`` on validation)
BEST_CKPT = "best.ckpt"
#: the latest checkpoint (every epoch and every ``ckpt_every_n_steps`` steps; resumes from it)
LAST_CKPT = "last.ckpt"
#: an ensemble's members (beside its evaluation or a submission)
MEMBERS_FILE = "members.json"
#: the folder of a run's evaluation tables (``worst.csv``, overlays)
EVALUATION_DIR = "evaluation"

#: every name above, for the test that no other module spells one
ALL = (
    CONFIG_FILE,
    METRICS_FILE,
    SPLITS_FILE,
    SCORES_FILE,
    POSTPROCESS_FILE,
    BEST_CKPT,
    LAST_CKPT,
    MEMBERS_FILE,
)
