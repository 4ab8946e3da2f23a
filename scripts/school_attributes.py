"""Write the school-level attributes of school.mat as a CSV for ``taan-viz compare --against``.

Usage: ``python scripts/school_attributes.py PATH/school.mat OUT.csv``. One row per task
(``school_001`` ..): gender, denomination, the two school percentages (mean over the school's
students) and the number of students (``taan_core.data.school_attributes``).
"""

from __future__ import annotations

import csv
import sys

from taan_core.data import school_attributes


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        table = school_attributes(argv[0])
    except ValueError as err:
        print(f"school_attributes: error: {err}", file=sys.stderr)
        return 2
    with open(argv[1], "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(list(table))
        writer.writerows(zip(*table.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
