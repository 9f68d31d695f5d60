# syntax=docker/dockerfile:1
# A Pully node: `docker build -t pully .`, then `docker run -p 8080:8080 pully`.
# Configuration comes from the environment at run time (README, Configuration); no secret is
# baked in. ECS runs it from ecs/task-definition.json (`pully deploy`).
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/pully
ENV PATH=/opt/pully/bin:$PATH
WORKDIR /src
# Dependencies in their own layer, rebuilt only when the packaging files change: a stub
# package stands in for the source so that pip resolves install_requires without it.
COPY pyproject.toml setup.cfg README.md ./
RUN mkdir pully_tornado \
    && echo '__version__ = "0"' > pully_tornado/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall --yes pully-tornado \
    && rm -rf build pully_tornado pully_tornado.egg-info
# Then the code: editing it reinstalls Pully alone.
COPY pully_tornado ./pully_tornado
RUN pip install --no-cache-dir --no-deps .

FROM python:${PYTHON_VERSION}-slim
ENV PATH=/opt/pully/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PULLY_HOST=0.0.0.0 \
    PULLY_PORT=8080
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /srv/pully \
    --shell /usr/sbin/nologin pully
COPY --from=build /opt/pully /opt/pully
# The working directory holds the embedded-mode files (relationships.json, functions/);
# the numeric user is "pully" (a numeric USER lets Kubernetes check runAsNonRoot).
WORKDIR /srv/pully
USER 10001:10001
EXPOSE 8080
# Liveness: the node answers /healthz (200, or 503 while Redis is away or it drains).
HEALTHCHECK --interval=15s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import http.client,os; c=http.client.HTTPConnection('127.0.0.1', int(os.environ.get('PULLY_PORT', '8080')), timeout=4); c.request('GET', '/healthz'); raise SystemExit(c.getresponse().status not in (200, 503))"]
# Exec form: pully is PID 1 and gets SIGTERM itself, then drains its clients and exits 0.
ENTRYPOINT ["pully"]
CMD ["serve"]
