# Sluice: one image for every role (api, worker, migrate, dev, tools).
# There is no build step: the service runs its TypeScript directly through tsx,
# which is a runtime dependency, so the image needs only production dependencies.
FROM node:20-bookworm-slim

ENV NODE_ENV=production \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    NPM_CONFIG_FUND=false

WORKDIR /app

# Dependencies first, so source edits do not invalidate the npm layer.
# (@swc/core, used by the Temporal worker to bundle workflows, comes in as a
# dependency of @temporalio/worker, so --omit=dev keeps it.)
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit \
    && npm cache clean --force

# Source. Owned by root and read-only for the service user; only the data
# directory is writable.
COPY . .
# The operator console's static files (Vite, a runtime dependency for this step),
# served by the API at /console/.
RUN npm run build:console \
    && mkdir -p /app/.data && chown node:node /app/.data

# The node image ships an unprivileged "node" user (uid 1000).
USER node

# `node --import tsx` is what the tsx CLI does, minus the extra wrapper process,
# so signals (SIGTERM on `docker stop`) reach the service directly.
ENTRYPOINT ["node", "--import", "tsx", "src/cli.ts"]
CMD ["api"]
