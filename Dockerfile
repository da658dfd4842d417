# One image for every LaStream service (agent, supervisor + WordCount workers, source).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY lastream_stream ./lastream_stream
COPY wordcount_app ./wordcount_app
COPY schemas ./schemas
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu .
ENTRYPOINT []
