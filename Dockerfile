FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY driftline ./driftline
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home driftline
USER 10001
ENTRYPOINT ["driftline"]
CMD ["demo"]
