"""Re-ranks one day over and over until killed: the subject of the SIGKILL crash test.

Usage: python crash_writer.py DB ROWS
Prints "ready" once the first write has committed, then keeps writing versions v1, v2, ...
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from atnn.concurrency import DAY, _ranked  # noqa: E402
from atnn.scoring import Ranked, write_rankings  # noqa: E402
from atnn.spec import load_spec  # noqa: E402

import pandas as pd  # noqa: E402


def main() -> None:
    db, rows = Path(sys.argv[1]), int(sys.argv[2])
    spec = load_spec("ml-100k")
    frames = [_ranked(rows, 0), _ranked(rows, 1)]
    empty = pd.DataFrame(columns=["item_id", "reason"])
    version = 0
    while True:
        version += 1
        write_rankings(db, Ranked(DAY, f"v{version}", frames[version % 2], empty), spec)
        if version == 1:
            print("ready", flush=True)


if __name__ == "__main__":
    main()
