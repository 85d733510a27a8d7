#!/usr/bin/env bash
# Flower for `make run` ("$@" is the flower command line), started once a delivery worker
# answers.  Flower asks the workers which queues they consume when it starts, and its Broker
# tab lists only those: started before the worker, it showed "No queue data is available"
# until someone refreshed it by hand.  Waits WEBHOOKS_FLOWER_WAIT_SECONDS (120) at most, then
# starts anyway and says so.
set -u
wait_seconds=${WEBHOOKS_FLOWER_WAIT_SECONDS:-120}
app=${WEBHOOKS_FLOWER_CELERY_APP:-delivery.worker}
deadline=$((SECONDS + wait_seconds))
echo "flower: waiting for a worker to answer, so that the Broker tab lists its queues"
until celery -A "$app" inspect ping --timeout 1 >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "flower: no worker answered in ${wait_seconds} s; starting anyway"
        break
    fi
    sleep 1
done
exec "$@"
