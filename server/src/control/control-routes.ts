import { Router } from 'express';
import { controlBodySchema, operatorMessageBodySchema, runIdParamsSchema } from '@handoff/shared';
import type { ControlService } from './control-service.js';
import type { MessageService } from '../messages/message-service.js';
import type { RunService } from '../runs/run-service.js';
import { requireUser } from '../http/auth.js';
import { parseBody, parseParams } from '../http/validate.js';

/** `/api/task-runs/:id/control`, `…/operator-messages`, `…/needs-operator/dismiss`. */
export function controlRoutes(control: ControlService, messages: MessageService, runs: RunService): Router {
  const router = Router({ mergeParams: true });

  router.post('/control', async (req, res) => {
    const actor = requireUser(res, 'operator');
    const { id } = parseParams(runIdParamsSchema, req);
    res.json(await control.apply(actor, id, parseBody(controlBodySchema, req)));
  });

  router.post('/operator-messages', async (req, res) => {
    const actor = requireUser(res, 'operator');
    const { id } = parseParams(runIdParamsSchema, req);
    res.status(201).json(await messages.send(actor, id, parseBody(operatorMessageBodySchema, req).message));
  });

  router.get('/operator-messages', async (req, res) => {
    requireUser(res, 'observer');
    const { id } = parseParams(runIdParamsSchema, req);
    res.json({ messages: await messages.list(id) });
  });

  router.post('/needs-operator/dismiss', async (req, res) => {
    const actor = requireUser(res, 'operator');
    const { id } = parseParams(runIdParamsSchema, req);
    res.json(await runs.dismissNeedsOperator(actor, id));
  });

  return router;
}
