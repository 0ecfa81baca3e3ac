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
# Each file is shown as a table when it holds rows of measurements (a list of records, or a
# `"rows"` list beside metadata), and as its metadata otherwise. Where no benchmark has been
# recorded yet the page says so.

# %% tags=["nbval-ignore-output"]
records = sorted(RESULTS.glob("bench*.json"))
if not records:
    print(f"No benchmark recorded yet: {RESULTS}/bench*.json is absent. Run `python bench/run.py`.")
for path in records:
    data = json.loads(path.read_text())
    rows = data.get("rows") if isinstance(data, dict) else data
    meta = {k: v for k, v in data.items() if k != "rows"} if isinstance(data, dict) else {}
    print(f"== {path.name}")
    for key, value in meta.items():
        if not isinstance(value, (list, dict)):
            print(f"  {key}: {value}")
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        display(pd.DataFrame(rows))
    elif isinstance(data, dict):
        display(pd.json_normalize(data, max_level=1).T.rename(columns={0: "value"}))

# %% [markdown]
# ## Reading the numbers
#
# - Throughput is in images per second and peak memory as resident set size (RSS); both depend on
#   the machine, so compare rows of one record, not records of different machines.
# - The targets for the input pipeline on the 2-core development machine are 5,000 images/s for
#   the PCam `.h5` stream with the `pcam-seed` augmentation (peak RSS under 2 GiB while streaming the
#   full 7.2 GB training file) and 2,000 images/s for the JPEG folder.
