"""A small labelled corpus for the classifier and conditional-generator tests.

Made-up plant names, each followed by region codes that depend on its genus (its first
syllables), as they do in plants.data: a model can learn them, and a test can tell whether it
did. Written as plants.data into a directory the tests point NUMPY_RNN_DATA_DIR at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SYLLABLES = ["ab", "el", "ia", "ros", "a", "ca", "mo", "lu", "pi", "nus", "ta", "ri", "um", "ve"]
REGIONS = ["ak", "ca", "fl", "hi", "ny", "pr", "tx"]


def labelled_lines(n: int = 400, seed: int = 0) -> list[str]:
    """``n`` lines ``name,code,code,...``: unique names; the genus fixes most of the codes."""
    rng = np.random.default_rng(seed)
    genera = ["".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4)))) for _ in range(25)]
    home = {g: list(rng.choice(REGIONS, size=int(rng.integers(1, 4)), replace=False))
            for g in genera}
    lines, seen = [], set()
    while len(lines) < n:
        genus = str(rng.choice(genera))
        name = genus if rng.random() < 0.3 else genus + " " + "".join(rng.choice(SYLLABLES, 2))
        if name in seen:
            continue
        seen.add(name)
        codes = set(home[genus])
        if rng.random() < 0.3:
            codes.add(str(rng.choice(REGIONS)))
        lines.append(",".join([name, *sorted(codes)]))
    return lines


def write_labelled_plants(directory: Path, n: int = 400, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "plants.data"
    path.write_text("\n".join(labelled_lines(n, seed)) + "\n", encoding="utf-8")
    return path
