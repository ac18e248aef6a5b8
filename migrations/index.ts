import * as initial from './0001-initial.js';
import * as controlTiming from './0002-control-timing.js';
import * as handoff from './0003-handoff.js';
import * as revisions from './0004-revisions.js';
import * as auditIndex from './0005-audit-run-seq-index.js';
import * as auditNoTruncate from './0006-audit-no-truncate.js';
import * as approvalQueues from './0007-approval-queues.js';
import * as tokenLifecycle from './0008-token-lifecycle.js';
import * as webhooks from './0009-webhooks.js';
import * as auditCheckpoints from './0010-audit-checkpoints.js';
import * as workerLiveness from './0011-worker-liveness-indexes.js';
import * as webhookOutbox from './0012-webhook-outbox-trigger.js';
import * as auditAppendFunction from './0013-audit-append-function.js';
import * as recordingTimeIndex from './0015-recording-time-index.js';
import * as runsNeedsOperatorIndex from './0016-runs-needs-operator-index.js';
import * as auditEvents from './0017-audit-events.js';
import * as shareStartRequested from './0018-share-start-requested.js';
import * as auditAppendRows from './0019-audit-append-rows.js';
import * as runViewFunction from './0020-run-view-function.js';

/** Every migration, in order. The server runs the pending ones at start. */
export const migrations: ReadonlyArray<{ name: string; up: string[] }> = [initial, controlTiming, handoff, revisions, auditIndex, auditNoTruncate, approvalQueues, tokenLifecycle, webhooks, auditCheckpoints, workerLiveness, webhookOutbox, auditAppendFunction, recordingTimeIndex, runsNeedsOperatorIndex, auditEvents, shareStartRequested, auditAppendRows, runViewFunction];
