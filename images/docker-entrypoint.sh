#!/bin/sh
# The job image's entry point (Flink's kubernetes.entry.path): the Flink Kubernetes Operator
# starts every JobManager and TaskManager container as this script with Flink's start command
# as its arguments. The operator mounts Flink's configuration, so nothing is rewritten here.
set -e
if [ "$#" -eq 0 ]; then
    echo "usage: /docker-entrypoint.sh COMMAND [ARG ...] (e.g. fraudstream job run)" >&2
    exit 2
fi
exec "$@"
