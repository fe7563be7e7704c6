# syntax=docker/dockerfile:1
# siem-exporter container image. Build with
#   docker build -t siem-exporter:0.1.0 .
# or, without a Docker engine, with scripts/build-image (buildah), as CI does. PYTHON_IMAGE
# may be any Debian-based Python 3.11 image with pip; the script passes one it makes from
# Debian packages, since CI reaches no image registry.
# The build stage turns the project and its dependencies into wheels; the final stage
# installs only those wheels, so no compiler or build backend reaches the image.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed UID/GID that the Helm chart's securityContext (runAsUser/fsGroup 10001) matches.
RUN groupadd --system --gid 10001 siem-exporter \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/siem-exporter --shell /usr/sbin/nologin siem-exporter \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/siem-exporter \
 && install -d -m 0755 /etc/siem-exporter
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels siem-exporter
USER 10001:10001
WORKDIR /var/lib/siem-exporter
# The dedupe ledger and checkpoints (config `state.path`) live here.
VOLUME ["/var/lib/siem-exporter"]
EXPOSE 9795
ENTRYPOINT ["siem-exporter"]
CMD ["run", "--config", "/etc/siem-exporter/config.yaml"]
