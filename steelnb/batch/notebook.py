"""What the notebooks share: their titles, and the setup their first code cell runs.

``setup()`` replaces the block of display settings each notebook used to paste; it hides no
warning wholesale, only the few that a CPU study triggers by design (see ``QUIET``).
"""

from __future__ import annotations

import warnings
from importlib import metadata

from ..data.errors import SteelnbError

#: each notebook's title in the report (a run's own title, from its plan, wins)
TITLES = {
    "01_eda": "The data",
    "02_class_balance": "Class balance",
    "03_train": "Training",
    "04_loss_ablation": "Loss ablation",
    "05_evaluate": "Evaluation",
    "06_results": "Results",
    "07_pseudo_labels": "Pseudo-labels",
    "08_recipe": "The winners' recipe, step by step",
    "09_real_sample": "Real steel: the labelled Severstal sample, cross-validated",
}

#: (message pattern, why it is expected here): warnings a notebook of this study raises on purpose
QUIET = (
    (r".*does not have many workers.*", "the CPU study loads data in the training process (num_workers 0)"),
    (r".*(number of training batches|log_every_n_steps).*", "short CPU epochs log once per epoch"),
)


def setup(figsize: tuple[float, float] = (12, 3.5), dpi: int = 80, precision: int = 3) -> None:
    """Display settings for a notebook: figure size and resolution, a light grid, 3 decimals
    in tables; silences only the expected warnings in ``QUIET``."""
    import matplotlib.pyplot as plt
    import pandas as pd

    plt.rcParams.update({"figure.figsize": figsize, "figure.dpi": dpi, "axes.grid": True, "grid.alpha": 0.3})
    pd.set_option("display.precision", precision)
    for pattern, _why in QUIET:
        warnings.filterwarnings("ignore", message=pattern)


class MetadataError(SteelnbError):
    """The installed package carries no repository address (``project.urls`` in pyproject.toml)."""


def repository_url() -> str:
    """The project's repository address, from the installed package's metadata (``Repository``
    in ``[project.urls]`` of pyproject.toml, the one place it is set)."""
    try:
        urls = metadata.metadata("steelnb").get_all("Project-URL") or []
    except metadata.PackageNotFoundError as e:
        raise MetadataError("steelnb is not installed (pip install -e .): no package metadata") from e
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "repository":
            return url.strip()
    raise MetadataError(
        "the installed steelnb metadata has no Repository URL; set [project.urls] Repository in "
        "pyproject.toml and reinstall (pip install -e .)"
    )


def colab_install_line() -> str:
    """The pip line a Colab notebook runs first to install steelnb from its repository."""
    return f'!pip install "git+{repository_url()}"'
