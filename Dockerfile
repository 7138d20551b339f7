# syntax=docker/dockerfile:1

# Build stage: the project and all its dependencies as wheels.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# pyproject.toml names README.md as the package's readme, so the build needs it.
COPY pyproject.toml README.md ./
COPY operations ./operations
COPY hub ./hub
RUN python -m pip wheel --wheel-dir /wheels .

# Final stage: a virtualenv holding only the installed wheels, run by an unprivileged user.
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    OPERATIONS_HOST=0.0.0.0
# The wheels are bind-mounted, not copied, so they add no layer to the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links=/wheels operations \
    && groupadd --gid 10001 operations \
    && useradd --uid 10001 --gid operations --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin operations
# Numeric, so that orchestrators can verify runAsNonRoot.
USER 10001:10001
EXPOSE 5005
# A start period: the service connects to Redis and RabbitMQ as it starts.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % (os.environ.get('OPERATIONS_PORT', '').strip() or '5005'), timeout=4)"
ENTRYPOINT ["operations"]
CMD ["serve"]
