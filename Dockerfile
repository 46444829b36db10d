# The hub as an image: `docker compose up` uses it for every instance.
FROM node:20.18.1-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts

FROM python:3.11.11-slim-bookworm
WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY common ./common
COPY hub ./hub
COPY handlers ./handlers
COPY storage ./storage
COPY hubclient ./hubclient
RUN pip install --no-cache-dir --no-deps .
# The console and widget pages, with socket.io-client from the npm registry.
COPY web ./web
COPY --from=web /web/node_modules ./web/node_modules
RUN useradd --create-home hub && mkdir -p /data && chown hub /data
USER hub
ENV HUB_DATA_DIR=/data
EXPOSE 8000
CMD ["hub", "serve", "--host", "0.0.0.0", "--port", "8000"]
