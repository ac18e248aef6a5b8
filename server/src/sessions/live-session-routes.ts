import { Router } from 'express';
import { createLiveSessionBodySchema, extendLiveSessionBodySchema, grantWriteBodySchema, revokeLiveSessionBodySchema, revokeWriteBodySchema, runIdParamsSchema } from '@handoff/shared';
import type { LiveSessionService } from './live-session-service.js';
import type { WriteGrantService } from '../grants/write-grant-service.js';
import { requireUser } from '../http/auth.js';
import { parseBody, parseParams } from '../http/validate.js';

/** `/api/task-runs/:id/live-session(s)`: the share lifecycle (DESIGN.md §3). */
export function liveSessionRoutes(sessions: LiveSessionService, grants: WriteGrantService): Router {
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

  // Write grants: RW attach data goes into the grantee's own response only.
  // Observers may ask too (from the read-only terminal): the policy decides, by default with an approval.
  router.post('/live-session/grant-write', async (req, res) => {
    const actor = requireUser(res, 'observer');
    const { id } = parseParams(runIdParamsSchema, req);
    res.set('Cache-Control', 'no-store').json(await grants.grant(actor, id, parseBody(grantWriteBodySchema, req)));
  });

  /** The caller's live grant with its attach data again (e.g. once an approval granted it). */
  router.get('/live-session/write-grant', async (req, res) => {
    const actor = requireUser(res, 'operator');
    const { id } = parseParams(runIdParamsSchema, req);
    res.set('Cache-Control', 'no-store').json(await grants.reveal(actor, id));
  });

  router.post('/live-session/revoke-write', async (req, res) => {
    const actor = requireUser(res, 'operator');
    const { id } = parseParams(runIdParamsSchema, req);
    res.json(await grants.revoke(actor, id, parseBody(revokeWriteBodySchema, req)));
  });

  return router;
}
