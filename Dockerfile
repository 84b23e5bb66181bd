# Images for docker-compose.yml. Two targets:
#   ves-streams  the Python package: workers (`faust -A ves_streams worker`),
#                the local VES collector and the notification relay
#   collectd     Debian's collectd-core with write_kafka (librdkafka1, libyajl2)

FROM python:3.11-slim-bookworm AS ves-streams
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ves_streams ./ves_streams
COPY topologies ./topologies
COPY schemas ./schemas
# The capture is what `ves-streams replay` publishes when no collectd runs.
COPY tests/fixtures/collectd ./tests/fixtures/collectd
RUN pip install . && useradd --system --home /var/lib/ves-streams --create-home ves
USER ves
ENV VES_STREAMS_DATA_DIR=/var/lib/ves-streams/data \
    VES_STREAMS_TOPOLOGY=/app/topologies/host.yaml
EXPOSE 6066 30000 18089
CMD ["faust", "-A", "ves_streams", "worker", "-l", "info"]

FROM debian:bookworm-slim AS collectd
RUN apt-get update \
 && apt-get install -y --no-install-recommends collectd-core librdkafka1 libyajl2 libcurl4 \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/collectd/collectd.conf /etc/collectd/collectd.conf
CMD ["/usr/sbin/collectd", "-f", "-C", "/etc/collectd/collectd.conf"]
