# %% [markdown]
# # Appendix 2: benchmarks
#
# The benchmark scripts in `bench/` measure the input pipeline and the models on the machine they
# run on and record their output in `book/results/bench*.json`. This page only *reads* those
# records: it never reruns a benchmark, so the numbers are the ones measured, with the machine and
# date each record names. Rerun them with `python bench/run.py` (see `bench/`).

# %%
import json
from pathlib import Path

import pandas as pd

RESULTS = Path("results")

# %% [markdown]
# ## Recorded runs
#
# Each record is shown as its metadata (what was measured, on which machine, at which commit and
# date) followed by one table per list of measurements it holds. Where no benchmark has been
# recorded yet the page says so.

# %% tags=["nbval-ignore-output"]
records = sorted(RESULTS.glob("bench*.json"))
if not records:
    print(f"No benchmark recorded yet: {RESULTS}/bench*.json is absent. Run `python bench/run.py`.")
for path in records:
    record = json.loads(path.read_text())
    record = {"rows": record} if isinstance(record, list) else record
    tables = {key: value for key, value in record.items()
              if isinstance(value, list) and value and all(isinstance(row, dict) for row in value)}
    print(f"== {path.name}")
    display(pd.json_normalize({k: v for k, v in record.items() if k not in tables}).T.rename(columns={0: "value"}))
    for key, rows in tables.items():
        print(f"-- {path.name}: {key}")
        display(pd.json_normalize(rows))

# %% [markdown]
# ## Reading the numbers
#
# - Throughput is in images per second and peak memory as resident set size (RSS); both depend on
#   the machine, so compare rows of one record, not records of different machines.
# - The targets for the input pipeline on the 2-core development machine are 5,000 images/s for
#   the PCam `.h5` stream with the `pcam-seed` augmentation (peak RSS under 2 GiB while streaming the
#   full 7.2 GB training file) and 2,000 images/s for the JPEG folder.
# - The development machine is shared; records that note the load average before the run say how
#   busy it was, and a high load lowers every throughput in that record.
#
# ```{warning}
# The records stored now were all measured while the 2-core machine was heavily loaded (1-minute
# load average 5 to 15, from parallel development work and training runs; each record lists its
# own). Their wall-clock rates are far below what the machine does when idle, and the "fraction of
# ceiling" values mix measurements taken at different loads. The CPU-time figures recorded beside
# them are disturbed much less and are the ones to read until `python bench/run.py` is rerun on a
# quiet machine.
# ```
