# One image for every Conveyor process (web, worker, beat, flower, migrate); docker-compose.yml
# picks the command.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH="/opt/venv/bin:$PATH"

RUN pip install --no-cache-dir uv

WORKDIR /app
# Dependencies first, from the lock file only, so that a code change does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project --no-cache

COPY . .
# Static files for WhiteNoise to serve. DEBUG=true only so that settings load without secrets
# at build time; it does not stay in the image.
RUN DEBUG=true python manage.py collectstatic --noinput
RUN useradd --system --create-home conveyor \
    && mkdir -p /app/var/artifacts \
    && chown -R conveyor /app/var
USER conveyor

EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
