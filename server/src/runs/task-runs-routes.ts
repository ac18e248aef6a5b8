import { Router } from 'express';
import { cancelRunBodySchema, createRunBodySchema, listRunsQuerySchema, runIdParamsSchema } from '@handoff/shared';
import type { RunService } from './run-service.js';
import { requireUser } from '../http/auth.js';
import { parseBody, parseParams, parseQuery } from '../http/validate.js';

/** `/api/task-runs`: create, list, show, cancel (DESIGN.md §3). */
export function taskRunsRoutes(runs: RunService): Router {
  const router = Router();

  router.post('/', async (req, res) => {
    const actor = requireUser(res, 'operator');
    const body = parseBody(createRunBodySchema, req);
    res.status(201).json(await runs.create(actor, body));
  });

  router.get('/', async (req, res) => {
    requireUser(res, 'observer');
    res.json(await runs.list(parseQuery(listRunsQuerySchema, req)));
  });

  router.get('/:id', async (req, res) => {
    requireUser(res, 'observer');
    const { id } = parseParams(runIdParamsSchema, req);
    res.json(await runs.view(id));
  });

  router.post('/:id/cancel', async (req, res) => {
    const actor = requireUser(res, 'operator');
    const { id } = parseParams(runIdParamsSchema, req);
    const body = parseBody(cancelRunBodySchema, req);
    res.json(await runs.cancel(actor, id, body.reason));
  });

  return router;
}
