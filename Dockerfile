# The image docker-compose.yml runs as `api` and `worker`.
FROM python:3.11-slim
RUN useradd --create-home stepline
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY projections projections
COPY engine engine
COPY api api
COPY examples examples
RUN pip install --no-cache-dir .
USER stepline
