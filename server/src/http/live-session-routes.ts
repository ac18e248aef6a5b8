import { Router } from 'express';
import { createLiveSessionBodySchema, extendLiveSessionBodySchema, revokeLiveSessionBodySchema, runIdParamsSchema } from '@handoff/shared';
import type { LiveSessionService } from '../services/live-sessions.js';
import { requireUser } from './auth.js';
import { parseBody, parseParams } from './validate.js';

/** `/api/task-runs/:id/live-session(s)`: the share lifecycle (DESIGN.md §3). */
export function liveSessionRoutes(sessions: LiveSessionService): Router {
  const router = Router({ mergeParams: true });

  router.post('/live-session', async (req, res) => {
    const { id } = parseParams(runIdParamsSchema, req);
    const body = parseBody(createLiveSessionBodySchema, req);
    const actor = requireUser(res, 'operator');
    const { session, created } = await sessions.create(actor, id, body);
    res.status(created ? 201 : 200).json({ session });
  });

  router.get('/live-session', async (req, res) => {
    requireUser(res, 'observer');
    const { id } = parseParams(runIdParamsSchema, req);
    res.json({ session: await sessions.primary(id) });
  });

  router.get('/live-sessions', async (req, res) => {
    requireUser(res, 'observer');
    const { id } = parseParams(runIdParamsSchema, req);
    res.json({ sessions: await sessions.list(id) });
  });

  router.post('/live-session/extend', async (req, res) => {
    const actor = requireUser(res, 'operator');
    const { id } = parseParams(runIdParamsSchema, req);
    res.json({ session: await sessions.extend(actor, id, parseBody(extendLiveSessionBodySchema, req)) });
  });

  router.post('/live-session/revoke', async (req, res) => {
    const actor = requireUser(res, 'operator');
    const { id } = parseParams(runIdParamsSchema, req);
    res.json({ session: await sessions.revoke(actor, id, parseBody(revokeLiveSessionBodySchema, req)) });
  });

  return router;
}
