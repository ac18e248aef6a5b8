import { z } from 'zod';

/** Events a webhook endpoint can subscribe to. */
export const WebhookEvent = {
  runNeedsOperator: 'run.needs_operator',
  approvalRequested: 'approval.requested',
  approvalResolved: 'approval.resolved',
  sessionGrace: 'session.grace',
  runFinished: 'run.finished',
  takeoverStarted: 'takeover.started',
  takeoverEnded: 'takeover.ended',
} as const;
export type WebhookEvent = (typeof WebhookEvent)[keyof typeof WebhookEvent];
export const webhookEventSchema = z.enum(Object.values(WebhookEvent) as [WebhookEvent, ...WebhookEvent[]]);

/** `json`: the event envelope; `slack`: `{text}` for a Slack incoming webhook (with a link to the run). */
export const webhookFormatSchema = z.enum(['json', 'slack']);
export type WebhookFormat = z.infer<typeof webhookFormatSchema>;

/** `POST /api/webhooks` (admin). */
export const createWebhookBodySchema = z.strictObject({
  /** Where deliveries are POSTed (http or https). */
  url: z.url({ protocol: /^https?$/ }).max(2000),
  events: z.array(webhookEventSchema).min(1).max(16),
  description: z.string().max(500).optional(),
  /** Default `json`. */
  format: webhookFormatSchema.default('json'),
});
export type CreateWebhookBody = z.infer<typeof createWebhookBodySchema>;

/** An endpoint as admins see it (never its secret). */
export const webhookEndpointSchema = z.object({
  id: z.string(),
  url: z.string(),
  events: z.array(webhookEventSchema),
  description: z.string().nullable(),
  format: webhookFormatSchema,
  createdBy: z.string(),
  createdAt: z.string(),
});
export type WebhookEndpoint = z.infer<typeof webhookEndpointSchema>;

/** The answer to `POST /api/webhooks`: the endpoint and its signing secret, shown this once. */
export const createdWebhookSchema = z.object({ endpoint: webhookEndpointSchema, secret: z.string() });
export const webhookListSchema = z.object({ endpoints: z.array(webhookEndpointSchema) });

/** One delivery of one event to one endpoint: `id` is the idempotency key (`X-Handoff-Delivery`). */
export const webhookDeliverySchema = z.object({
  id: z.string(),
  endpointId: z.string(),
  event: webhookEventSchema,
  /** `pending` (waiting for its next attempt), `delivering` (claimed by a node), `succeeded`, `failed` (gave up after the retry window). */
  status: z.enum(['pending', 'delivering', 'succeeded', 'failed']),
  attempts: z.number().int(),
  lastError: z.string().nullable(),
  /** HTTP status of the last attempt; null if none answered. */
  lastStatusCode: z.number().int().nullable(),
  createdAt: z.string(),
  nextAttemptAt: z.string().nullable(),
  deliveredAt: z.string().nullable(),
});
export type WebhookDelivery = z.infer<typeof webhookDeliverySchema>;
export const webhookDeliveryListSchema = z.object({ deliveries: z.array(webhookDeliverySchema) });

/** The JSON body of a `json` delivery. */
export interface WebhookEnvelope {
  /** The event's id: the same for every endpoint it goes to. */
  id: string;
  event: WebhookEvent;
  /** When it happened (ISO 8601). */
  at: string;
  /** The run's id, when the event is about a run. */
  runId: string | null;
  data: Record<string, unknown>;
}
