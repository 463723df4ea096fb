# The image the Helm chart runs: the scoring service (`serve`), the feedback app
# (`feedback-app`) and, on Flink's base image, the stream job (PythonDriver -pym
# stream_jobs.application). Build from the repository root:
#   docker build -t ghcr.io/fraudstream/fraudstream:0.1.0 --build-arg COMMIT=$(git rev-parse --short HEAD) .
FROM flink:2.0.2-java17

USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/fraudstream
COPY pyproject.toml README.md ./
COPY services services
COPY stream_jobs stream_jobs
COPY models models
RUN python3 -m venv /opt/fraudstream/.venv \
 && /opt/fraudstream/.venv/bin/pip install --no-cache-dir '.[all]' \
 && cp /opt/flink/opt/flink-python-2.0.2.jar /opt/flink/lib/ \
 && mkdir -p /opt/flink/plugins/metrics-prometheus \
 && cp /opt/flink/opt/flink-metrics-prometheus-2.0.2.jar /opt/flink/plugins/metrics-prometheus/ \
 && useradd --uid 10001 --create-home fraudstream
ARG COMMIT=unknown
ENV FRAUDSTREAM_BUILD_COMMIT=$COMMIT \
    PATH=/opt/fraudstream/.venv/bin:$PATH \
    PYTHONPATH=/opt/fraudstream
USER 10001
# No ENTRYPOINT of its own: Flink's stays for the job's pods; the chart's other containers
# run `fraudstream serve` and `fraudstream feedback-app`.
