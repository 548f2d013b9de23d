"""Shared fixtures: the real Severstal files beside the checkout, a small synthetic set in the
same layout, tiny random checkpoints, and small CPU settings."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub in a test

# Each xdist worker, and every kernel and process it starts, gets its share of the cores (set
# before torch is imported). Two workers of two threads on two cores oversubscribed them: torch's
# OpenMP threads spin-wait for each other, and 03_train's default run took 172 s beside the
# notebook batch where it took 27 s alone. A variable the caller set is kept.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
if _WORKERS > 1:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, str(max(1, (os.cpu_count() or 1) // _WORKERS)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real Severstal labels and images); skip when absent (a user's clone)."""
    if not (SHARED_DATA / "severstal-labels").is_dir():
        pytest.skip(f"real Severstal data not found at {SHARED_DATA} (only on the project's machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic data set in the Kaggle layout (``steelnb.data.synthetic``, seed 0): six
    256 x 1600 train images, three of them with masks (classes 1, 3, 3), and their train.csv.
    Made once per session; copy what a test changes."""
    from steelnb.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synthetic") / "data", n_images=6, n_test=0, seed=0)


@pytest.fixture(scope="session")
def make_tiny_run() -> Callable[..., Path]:
    """``make(folder, classes=4, seed=0, classifier=False, **config)`` -> a run folder holding a
    tiny random Unet (resnet18, 64 x 320, no pretrained weights) in ``best.ckpt``, saved as
    ``training.fit`` saves it. ``classifier``: with an image-level classification head (the
    config's cls_weight 0.5); ``config``: other TrainConfig fields (data_dir, subset, ...)."""

    def make(folder: Path, classes: int = 4, seed: int = 0, classifier: bool = False, **config) -> Path:
        import torch

        from steelnb.data.config import TrainConfig
        from steelnb.model.models import build_model

        torch.manual_seed(seed)
        fields = {"encoder": "resnet18", "height": 64, "width": 320, "classes": classes, **config}
        cfg = TrainConfig(**fields, cls_weight=0.5 if classifier else 0.0)
        model = build_model("Unet", cfg.encoder, encoder_weights=None, classes=classes, classifier=classifier)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"config": cfg.to_dict()},
            },
            folder / "best.ckpt",
        )
        return folder

    return make


@pytest.fixture(scope="session")
def tiny_run(make_tiny_run: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny four-class run folder for the session (a test that adds files removes them)."""
    return make_tiny_run(tmp_path_factory.mktemp("run") / "tiny")


@pytest.fixture()
def odd_images(synthetic_data: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """(folder, names of its four good synthetic images) where the folder also holds five odd
    files: handled ones (``png_named.jpg``, the first image as PNG under a .jpg name;
    ``grey.jpg``, single-channel; ``small.jpg``, 128 x 800) and reported ones (``truncated.jpg``,
    a JPEG cut in half; ``zz_text.jpg``, text)."""
    import shutil

    import cv2

    folder = tmp_path / "odd"
    folder.mkdir()
    names = sorted(p.name for p in (synthetic_data / "train_images").glob("*.jpg"))[:4]
    for name in names:
        shutil.copy(synthetic_data / "train_images" / name, folder / name)
    first = folder / names[0]
    image = cv2.imread(str(first))
    cv2.imwrite(str(tmp_path / "x.png"), image)
    shutil.move(tmp_path / "x.png", folder / "png_named.jpg")
    cv2.imwrite(str(folder / "grey.jpg"), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "small.jpg"), cv2.resize(image, (800, 128)))
    data = first.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "zz_text.jpg").write_text("not an image")
    return folder, names


#: the files that take longest (pytest --durations), started first so that with two xdist workers
#: (``--dist loadfile --no-loadscope-reorder``, the addopts; without that flag xdist 3.8 puts the
#: files with the most tests first, and the in-order test started last) neither waits alone on
#: one of them at the end. xdist hands each worker two files at the start, in turn: the in-order
#: test (about 500 s) gets a short file beside it, the other worker the next two longest.
LONGEST_FIRST = ("test_user_paths.py", "test_notebooks.py", "test_stored.py", "test_training.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise
    # the Kaggle-size checks take minutes of a core each: they run only when asked for by name
    # (`pytest -m scale`), deselected otherwise, so that no other selection (the fast loop's "not slow and not slurm"
    # among them) renders 18,074 images by leaving the marker out of its expression
    if "scale" not in (config.option.markexpr or ""):
        scale = [item for item in items if item.get_closest_marker("scale")]
        if scale:
            config.hook.pytest_deselected(items=scale)
            items[:] = [item for item in items if not item.get_closest_marker("scale")]
