import { type ApprovalRequest, errorBodySchema } from '@handoff/shared';
import { z } from 'zod';

/** `ApprovalRequest.outcome` after approval: what the replayed command returned. */
const outcomeSchema = z.union([z.object({ ok: z.literal(true) }), z.object({ ok: z.literal(false), error: errorBodySchema })]);

/** Whether an approved request's command ran (`done`), and its error message if it failed. */
export function approvalOutcome(approval: ApprovalRequest): { done: boolean; error: string | null } {
  const outcome = outcomeSchema.safeParse(approval.outcome);
  if (!outcome.success) return { done: false, error: null };
  return outcome.data.ok ? { done: true, error: null } : { done: true, error: outcome.data.error.message };
}
