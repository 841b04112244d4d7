# The image the Docker and Kubernetes work pools run (deployments/examples/): the locked dependencies, then
# retrainer itself. Flow runs import their flows from the installed package, so the image needs no checkout.
#   docker build -t retrainer:0.1.0 .
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
COPY requirements.lock ./
RUN pip install --no-cache-dir uv==0.13.8 \
    && uv pip sync --system --require-hashes --compile-bytecode requirements.lock
COPY pyproject.toml README.md ./
COPY retrainer retrainer
COPY flows flows
COPY tasks tasks
COPY deployments deployments
RUN uv pip install --system --no-deps . && useradd --create-home retrainer
# The model config: mount your own over it (a ConfigMap, a volume) or bake it into a derived image.
COPY retrainer.example.yaml /app/retrainer.yaml
USER retrainer
