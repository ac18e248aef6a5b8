import { Router } from 'express';
import { idParamsSchema } from '@handoff/shared';
import type { AuthService } from './auth-service.js';
import type { Notifier } from '../hooks/notifier.js';
import { requireUser } from '../http/auth.js';
import { parseParams } from '../http/validate.js';

/** Admin: `GET /api/users/:id/tokens`, `DELETE /api/tokens/:id` (its sockets are disconnected on every node). */
export function tokenRoutes(auth: AuthService, notifier: Pick<Notifier, 'disconnectToken'>): Router {
  const router = Router();

  router.get('/users/:id/tokens', async (req, res) => {
    requireUser(res, 'admin');
    const { id } = parseParams(idParamsSchema, req);
    res.json({ tokens: await auth.listTokens(id) });
  });

  router.delete('/tokens/:id', async (req, res) => {
    const actor = requireUser(res, 'admin');
    const { id } = parseParams(idParamsSchema, req);
    const token = await auth.revokeToken(actor, id);
    notifier.disconnectToken(id);
    res.json({ token });
  });

  return router;
}
