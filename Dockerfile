# syntax=docker/dockerfile:1
#
# mailpipe image: one image for every role (`mailpipe run --role <role>`), the migrations
# (`mailpipe db upgrade`) and the Graph emulator (`mailpipe graph-emulator`).
#
#   docker build -t mailpipe:dev .
#   docker run --rm mailpipe:dev --help
#
# Stage 1 builds wheels for mailpipe and every dependency and installs them into a virtualenv;
# stage 2 copies only that virtualenv onto a slim Python image (no compiler, no pip cache, no
# source tree) and runs it as uid 10001. All dependencies ship manylinux wheels, so the builder
# needs no compiler either; add `build-essential` there (never in the runtime) if one stops doing so.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# README* matches nothing harmlessly if the file is absent (pyproject names it as the long description).
COPY pyproject.toml README* ./
COPY pipeline ./pipeline
# With the uvloop extra, so MAILPIPE_EVENT_LOOP=uvloop needs no other image.
RUN python -m pip wheel --wheel-dir /wheels '.[uvloop]' \
 && python -m venv /opt/mailpipe \
 && /opt/mailpipe/bin/pip install --no-index --find-links /wheels 'mailpipe[uvloop]' \
 && /opt/mailpipe/bin/mailpipe --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="mailpipe" \
      org.opencontainers.image.description="Send email exactly once through Microsoft Graph, fed from RabbitMQ." \
      org.opencontainers.image.licenses="Apache-2.0"
# Bytecode was compiled at install time; the root filesystem is read-only in Kubernetes.
ENV PATH=/opt/mailpipe/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MAILPIPE_HTTP_HOST=0.0.0.0 \
    MAILPIPE_HTTP_PORT=9464 \
    MAILPIPE_LOG_FORMAT=json
RUN groupadd --system --gid 10001 mailpipe \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin mailpipe
COPY --from=builder /opt/mailpipe /opt/mailpipe
WORKDIR /tmp
USER 10001:10001
EXPOSE 9464
# No HEALTHCHECK: Kubernetes probes /livez and /readyz; compose.yaml declares its own checks.
ENTRYPOINT ["mailpipe"]
CMD ["run"]
