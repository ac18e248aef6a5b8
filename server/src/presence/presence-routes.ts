import { Router } from 'express';
import { kickViewerBodySchema, runIdParamsSchema } from '@handoff/shared';
import type { PresenceService } from './presence-service.js';
import { requireUser } from '../http/auth.js';
import { parseBody, parseParams } from '../http/validate.js';

/** `/api/task-runs/:id/viewers/kick`: remove one viewer from a run's live view. */
export function presenceRoutes(presence: PresenceService): Router {
  const router = Router({ mergeParams: true });

  router.post('/viewers/kick', async (req, res) => {
    const actor = requireUser(res, 'operator');
    const { id } = parseParams(runIdParamsSchema, req);
    res.json(await presence.kick(actor, id, parseBody(kickViewerBodySchema, req)));
  });

  return router;
}
