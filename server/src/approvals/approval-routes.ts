import { Router } from 'express';
import { approvalIdParamsSchema, listApprovalsQuerySchema, resolveApprovalBodySchema } from '@handoff/shared';
import type { ApprovalService } from './approval-service.js';
import { requireUser } from '../http/auth.js';
import { parseBody, parseParams, parseQuery } from '../http/validate.js';

/** `/api/approvals`: the approval chain (DESIGN.md §3). */
export function approvalRoutes(approvals: ApprovalService): Router {
  const router = Router();

  router.get('/', async (req, res) => {
    requireUser(res, 'operator');
    res.json({ approvals: await approvals.list(parseQuery(listApprovalsQuerySchema, req).status) });
  });

  router.post('/:id/approve', async (req, res) => {
    const actor = requireUser(res, 'operator');
    const { id } = parseParams(approvalIdParamsSchema, req);
    res.json(await approvals.approve(actor, id, parseBody(resolveApprovalBodySchema, req).reason));
  });

  router.post('/:id/deny', async (req, res) => {
    const actor = requireUser(res, 'operator');
    const { id } = parseParams(approvalIdParamsSchema, req);
    res.json(await approvals.deny(actor, id, parseBody(resolveApprovalBodySchema, req).reason));
  });

  return router;
}
