"""The stream job in Flink's application mode: the entry module a Flink cluster runs
(``org.apache.flink.client.python.PythonDriver -pym stream_jobs.application``), as the Flink
Kubernetes Operator's FlinkDeployment does. Settings come from the pod's FRAUDSTREAM_*
variables; the cluster's own configuration (parallelism, checkpoints, reporters) wins."""

from __future__ import annotations

from services.core.settings import load_settings
from stream_jobs.job import build, insert_sql


def main() -> None:
    settings = load_settings()
    # The cluster's checkpoints and recovery (the operator's upgrade mode), not local ones.
    build(settings, local=False).execute_sql(insert_sql(settings))


if __name__ == "__main__":
    main()
