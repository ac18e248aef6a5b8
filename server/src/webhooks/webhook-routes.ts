import { Router } from 'express';
import { createWebhookBodySchema, idParamsSchema } from '@handoff/shared';
import type { WebhookService } from './webhook-service.js';
import { requireUser } from '../http/auth.js';
import { parseBody, parseParams } from '../http/validate.js';

/** Admin: outbound webhook endpoints and their deliveries (docs/webhooks.md). */
export function webhookRoutes(webhooks: WebhookService): Router {
  const router = Router();

  router.post('/', async (req, res) => {
    const actor = requireUser(res, 'admin');
    // The secret is in this answer only: it is sealed at rest and never shown again.
    res.status(201).json(await webhooks.create(actor.name, parseBody(createWebhookBodySchema, req)));
  });

  router.get('/', async (_req, res) => {
    requireUser(res, 'admin');
    res.json({ endpoints: await webhooks.list() });
  });

  router.delete('/:id', async (req, res) => {
    requireUser(res, 'admin');
    res.json(await webhooks.remove(parseParams(idParamsSchema, req).id));
  });

  router.get('/:id/deliveries', async (req, res) => {
    requireUser(res, 'admin');
    res.json({ deliveries: await webhooks.deliveries(parseParams(idParamsSchema, req).id) });
  });

  return router;
}
