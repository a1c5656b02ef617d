"""Shared fixtures: tiny seeded data in the real ML-100K file format, and settings in temp dirs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from atnn.config import Settings, load_settings

# Text-embedding weights are unpacked here, not into the home folder (flows started by tests inherit it).
os.environ.setdefault("ATNN_MODEL_CACHE", str(Path(tempfile.gettempdir()) / "atnn-test-models"))

GENRES = ["unknown", "Action", "Comedy", "Drama", "Romance", "Thriller"]
OCCUPATIONS = ["student", "engineer", "artist", "doctor"]


def write_tiny_ml100k(folder: Path, *, n_users: int = 60, n_items: int = 80, n_events: int = 4000, seed: int = 0) -> Path:
    """A tiny dataset in the exact ML-100K formats, with a planted signal.

    Items arrive over 200 days (an item's first rating is its arrival); a user likes an item more when
    the item is a Comedy and the user is 'F', or a Drama and the user is 'M', and Thriller is liked by
    everyone: profile alone predicts clicks, which a working model must learn.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n", encoding="latin-1")
    genders = rng.choice(["M", "F"], n_users)
    ages = rng.integers(15, 70, n_users)
    users = [
        f"{u + 1}|{ages[u]}|{genders[u]}|{OCCUPATIONS[u % len(OCCUPATIONS)]}|{rng.integers(10000, 99999)}"
        for u in range(n_users)
    ]
    (folder / "u.user").write_text("\n".join(users) + "\n", encoding="latin-1")
    item_genres = []
    lines = []
    for i in range(n_items):
        flags = np.zeros(len(GENRES), dtype=int)
        flags[1 + i % (len(GENRES) - 1)] = 1
        if i % 7 == 0:
            flags[1 + (i // 7) % (len(GENRES) - 1)] = 1
        item_genres.append(flags)
        year = 1950 + (i * 3) % 50
        name = f"Movie {['Alpha', 'Beta', 'Gamma', 'Delta'][i % 4]} {'Café' if i % 5 == 0 else 'Night'} {i}"
        release = f"01-Jan-{year}" if i % 11 else ""
        lines.append(f"{i + 1}|{name} ({year})|{release}||http://example.invalid/{i + 1}|" + "|".join(map(str, flags)))
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    start = 880_000_000
    arrival = start + np.sort(rng.integers(0, 200 * 86400, n_items))
    rows = set()
    out = []
    while len(out) < n_events:
        u = int(rng.integers(0, n_users))
        i = int(rng.integers(0, n_items))
        if (u, i) in rows:
            continue
        rows.add((u, i))
        ts = int(arrival[i] + rng.integers(0, 60 * 86400))
        g = item_genres[i]
        affinity = 0.8 * g[5] + (1.0 if (g[2] and genders[u] == "F") or (g[3] and genders[u] == "M") else -0.6)
        p = 1 / (1 + np.exp(-(affinity + rng.normal(0, 0.3))))
        rating = int(rng.choice([4, 5])) if rng.random() < p else int(rng.choice([1, 2, 3]))
        out.append(f"{u + 1}\t{i + 1}\t{rating}\t{ts}")
    # The first rating of each item fixes its arrival: make sure every item has one at `arrival`.
    for i in range(n_items):
        out.append(f"{(i % n_users) + 1}\t{i + 1}\t{3 + i % 3}\t{int(arrival[i])}")
    # Remove accidental duplicates of (user, item) pairs introduced by the arrival rows.
    seen = set()
    unique = []
    for line in out:
        u, i, _, ts = line.split("\t")
        if (u, i) not in seen:
            seen.add((u, i))
            unique.append(line)
    (folder / "u.data").write_text("\n".join(unique) + "\n", encoding="latin-1")
    return folder


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A datasets directory with a tiny `ml-100k/` folder."""
    root = tmp_path_factory.mktemp("datasets")
    write_tiny_ml100k(root / "ml-100k")
    return root


@pytest.fixture
def tiny_settings(tmp_path, tiny_data_dir) -> Settings:
    return load_settings(
        profile="test", dataset="ml-100k", home=tmp_path / "home", data_dir=tiny_data_dir, onnx_dir=tmp_path / "onnx"
    )


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real datasets (CI: ../shared/datasets). Missing data is a failure, not a skip."""
    value = os.environ.get("ATNN_DATA_DIR") or str(Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
    path = Path(value)
    if not (path / "ml-100k" / "u.data").is_file():
        pytest.fail(f"real datasets not found at {path}; set ATNN_DATA_DIR (CI uses ../shared/datasets)")
    return path
