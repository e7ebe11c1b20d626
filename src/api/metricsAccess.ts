import type { FastifyRequest } from 'fastify';
import { SluiceError } from '../domain/errors';
import { bearerKey, sameSecret } from './auth';

/**
 * Who may read /metrics: whoever sends SLUICE_METRICS_TOKEN as `Authorization: Bearer
 * <token>` (Prometheus: `authorization.credentials_file`); anyone else gets 401 in the
 * API's one error shape. Not an API key, not even the admin's: the scraper's secret
 * opens nothing else, and the admin key never sits in Prometheus' configuration.
 *
 * Why a token on the API's port and not a port of its own: a second listener is still
 * reachable by whatever reaches the first unless every deployment firewalls it (compose
 * networks, Kubernetes services and load balancers expose ports, not paths), so it
 * would protect nothing by itself and add a setting, a port and a health check to
 * every deployment. A token protects the endpoint wherever the API is reachable, and
 * Prometheus sends one natively.
 *
 * Without a token /metrics is open: the API refuses to start that way unless it listens
 * on loopback or is a development stack (src/config.ts metricsTokenRefusal).
 */
export function metricsAccess(token: string | undefined) {
  return async function checkMetricsToken(request: FastifyRequest): Promise<void> {
    if (token === undefined) return;
    const sent = bearerKey(request.headers.authorization);
    if (!sent) throw new SluiceError('unauthorized', 'missing metrics token: send Authorization: Bearer <SLUICE_METRICS_TOKEN>');
    if (!sameSecret(sent, token)) throw new SluiceError('unauthorized', 'wrong metrics token: /metrics takes SLUICE_METRICS_TOKEN, not an API key');
  };
}
