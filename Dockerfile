# The worker image for docker-compose.yml: the pipeline package with its schemas.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENV PIPELINE_DATA_DIR=/data \
    PIPELINE_WEB_HOST=0.0.0.0
VOLUME /data
EXPOSE 6066
CMD ["faust", "-A", "pipeline.app", "worker", "-l", "info"]
