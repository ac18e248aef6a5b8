import { Router } from 'express';
import { listEventsQuerySchema, runIdParamsSchema } from '@handoff/shared';
import type { AuditLog } from './audit-log.js';
import type { AuditAnchor } from './audit-anchor.js';
import type { RunService } from '../runs/run-service.js';
import type { TerminalService } from '../terminal/terminal-service.js';
import { requireUser } from '../http/auth.js';
import { parseParams, parseQuery } from '../http/validate.js';

/**
 * The cast header of a run whose worker did not report its pane (older workers): the
 * worker's default size (WORKER_COLS × WORKER_ROWS) and the TERM/shell every run gets.
 */
const DEFAULT_PANE = { cols: 120, rows: 32, term: 'screen-256color', shell: '/bin/sh' };

/** `GET /api/audit/public-key`: public, mounted before authentication (a public key reveals nothing). */
export function auditPublicKeyRoute(anchor: AuditAnchor): Router {
  const router = Router();
  router.get('/audit/public-key', (_req, res) => {
    res.json(anchor.publicKey());
  });
  return router;
}

/** `/api/task-runs/:id/events(/verify)` and `/recording.cast`. */
export function auditRoutes(audit: AuditLog, runs: RunService, terminal: TerminalService): Router {
  const router = Router({ mergeParams: true });

  router.get('/events', async (req, res) => {
    const actor = requireUser(res, 'observer');
    const { id } = parseParams(runIdParamsSchema, req);
    const q = parseQuery(listEventsQuerySchema, req);
    await runs.view(id); // NOT_FOUND for unknown runs
    if (q.format === 'json') {
      res.json(await audit.list(actor, id, q));
      return;
    }
    // JSONL export: the head is signed first and rows are streamed up to it, so the last
    // line covers exactly the rows above it even while the run keeps appending.
    const head = await audit.head(actor, id);
    res.type('application/x-ndjson').setHeader('content-disposition', `attachment; filename="run-${id}-audit.jsonl"`);
    for (let cursor = q.cursor; ; ) {
      const page = await audit.exportPage(actor, id, { cursor, limit: 1000, action: q.action, maxSeq: head.seq });
      for (const e of page.events) res.write(`${JSON.stringify(e)}\n`);
      if (page.nextCursor === null) break;
      cursor = page.nextCursor;
    }
    res.write(`${JSON.stringify({ head })}\n`);
    res.end();
  });

  router.get('/events/verify', async (req, res) => {
    const actor = requireUser(res, 'observer');
    const { id } = parseParams(runIdParamsSchema, req);
    await runs.view(id);
    res.json(await audit.verify(actor, id));
  });

  router.get('/recording.cast', async (req, res) => {
    requireUser(res, 'observer');
    const { id } = parseParams(runIdParamsSchema, req);
    const run = await runs.view(id);
    const pane = (await audit.pane(id)) ?? DEFAULT_PANE;
    // The charset is explicit: frames are UTF-8 text, and a client left guessing showed mojibake.
    res.setHeader('content-type', 'application/x-asciicast; charset=utf-8');
    res.setHeader('content-disposition', `attachment; filename="run-${id}.cast"`);
    const startedAt = Math.floor(new Date(run.startedAt ?? run.createdAt).getTime() / 1000);
    // The pane never resizes (`window-size manual` on the worker), so there are no "r" events.
    const header = { version: 2, width: pane.cols, height: pane.rows, timestamp: startedAt, ...(run.title ? { title: run.title } : {}), env: { TERM: pane.term, SHELL: pane.shell } };
    res.write(`${JSON.stringify(header)}\n`);
    for (let after = 0; ; ) {
      const { frames } = await terminal.scrollback(id, after);
      for (const f of frames) res.write(`${JSON.stringify([f.t / 1000, 'o', f.data])}\n`);
      if (!frames.length) break;
      after = frames[frames.length - 1]!.seq;
    }
    res.end();
  });

  return router;
}
