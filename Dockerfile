# The image docker-compose.yml runs as `api` and `worker`.
FROM python:3.11-slim
# Debian's Chromium for the browser executor (Playwright never downloads a browser here), and
# bubblewrap, the jail of every shell command (without it the shell executor runs nothing).
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium bubblewrap \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home stepline && mkdir /data && chown stepline /data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY projections projections
COPY engine engine
COPY api api
COPY examples examples
RUN pip install --no-cache-dir .
# Not root, so Chromium keeps its sandbox; artifacts (screenshots) go to the shared /data volume.
ENV STEPLINE_DATA_DIR=/data STEPLINE_BROWSER_PATH=/usr/bin/chromium
USER stepline
