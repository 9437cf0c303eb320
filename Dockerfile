# Opportune's image: the package and its dependencies, nothing else (compose.yaml runs it).
FROM python:3.12-slim

# LightGBM's wheel needs the OpenMP runtime; curl is for the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && useradd --system --home /data opportune \
    && mkdir -p /data && chown opportune /data

USER opportune
ENV OPPORTUNE_DATA_DIR=/data \
    OPPORTUNE_HOST=0.0.0.0 \
    OPPORTUNE_PORT=8000 \
    OPPORTUNE_LOG_FORMAT=json \
    OPPORTUNE_TRUSTED_PROXY_HEADERS=true
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD curl -fsS http://127.0.0.1:8000/readyz >/dev/null || exit 1
CMD ["opportune", "serve"]
