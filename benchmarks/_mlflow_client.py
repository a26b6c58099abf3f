"""MLflow's side of benchmarks/ingest.py and team.py; runs inside the MLflow venv, prints JSON.

python _mlflow_client.py URI per_call|batch POINTS [--barrier]
"""

import json
import sys
import time

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

uri, mode, points = sys.argv[1], sys.argv[2], int(sys.argv[3])
KEYS = ("loss", "acc", "lr", "grad")
mlflow.set_tracking_uri(uri)
client = MlflowClient(uri)
experiment = client.create_experiment(f"bench-{mode}-{time.time()}")
run = client.create_run(experiment)
run_id = run.info.run_id
steps = points // len(KEYS)
if "--barrier" in sys.argv[4:]:
    # benchmarks/team.py starts several clients and lets them go at once.
    print("ready", flush=True)
    sys.stdin.readline()

start = time.perf_counter()
if mode == "per_call":
    for i in range(steps):
        for key in KEYS:
            client.log_metric(run_id, key, 1.0 / (i + 1), step=i)
else:
    now = int(time.time() * 1000)
    batch: list[Metric] = []
    for i in range(steps):
        for key in KEYS:
            batch.append(Metric(key, 1.0 / (i + 1), now, i))
        if len(batch) >= 1000:  # MLflow's limit on metrics per log_batch request
            client.log_batch(run_id, metrics=batch)
            batch = []
    if batch:
        client.log_batch(run_id, metrics=batch)
elapsed = time.perf_counter() - start
stored = sum(len(client.get_metric_history(run_id, key)) for key in KEYS)
print(json.dumps({"points": stored, "seconds": elapsed}))
