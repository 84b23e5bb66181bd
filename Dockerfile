# Images for docker-compose.yml. Three stages:
#   wheel        builds the ves-streams wheel (topologies, VES schemas and the
#                recorded capture are package data inside it)
#   ves-streams  the wheel installed: workers (`faust -A ves_streams worker`),
#                the local VES collector and the notification relay
#   collectd     Debian's collectd-core with write_kafka (librdkafka1, libyajl2)

FROM python:3.11-slim-bookworm AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ves_streams ./ves_streams
COPY topologies ./topologies
COPY schemas ./schemas
RUN pip wheel --no-deps --wheel-dir /dist .

FROM python:3.11-slim-bookworm AS ves-streams
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /dist /tmp/dist
RUN pip install /tmp/dist/*.whl && rm -rf /tmp/dist \
 && useradd --system --home /var/lib/ves-streams --create-home ves
USER ves
WORKDIR /var/lib/ves-streams
# VES_STREAMS_TOPOLOGY unset: the shipped host.yaml (`ves-streams topologies`
# lists the others; set it to one of their names or mount your own file).
ENV VES_STREAMS_DATA_DIR=/var/lib/ves-streams/data
EXPOSE 6066 30000 18089
CMD ["faust", "-A", "ves_streams", "worker", "-l", "info"]

FROM debian:bookworm-slim AS collectd
RUN apt-get update \
 && apt-get install -y --no-install-recommends collectd-core librdkafka1 libyajl2 libcurl4 \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/collectd/collectd.conf /etc/collectd/collectd.conf
CMD ["/usr/sbin/collectd", "-f", "-C", "/etc/collectd/collectd.conf"]
