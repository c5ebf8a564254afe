# The hub image: one image, two roles (`hub serve` for the API, `hub worker` for Temporal work).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY hub ./hub
COPY workflows ./workflows
COPY activities ./activities
COPY api ./api
RUN pip install .
RUN useradd --create-home hub
USER hub
EXPOSE 8000
CMD ["hub", "serve"]
