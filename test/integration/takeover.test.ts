import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Socket } from 'socket.io-client';
import type { LiveSession, Run, WriteGrant } from '@handoff/shared';
import { em } from '../../server/src/infra/db/orm.js';
import { api, connect, emitAck, eventually, joinFrames, Viewer } from '../support/clients.js';
import { startTestHub, type TestHub } from '../support/hub.js';
import { pidsMatching } from '../support/processes.js';
import { startWorker, type WorkerProcess } from '../support/worker.js';

// STAND-IN: no tmate relay is reachable here, so the worker's tmate is test/fixtures/fake-tmate,
// which reports fixed fake attach strings; its RW ones contain `rw-SECRET-FAKE`. The hub,
// worker, tmux, the operator's shell and the agent are all real.
const FAKE_TMATE = path.resolve('test/fixtures/fake-tmate');
const RW_MARK = 'rw-SECRET-FAKE';
const SDK = path.resolve('worker/agent-sdk/index.mjs');

/** An agent on the real SDK: checkpoints every step and prints what a hand-back packet told it. */
const AGENT = `
import { checkpoint, onHandoff } from ${JSON.stringify(SDK)};
onHandoff((p) => console.log('HANDOFF-RECEIVED summary=' + p.summary + ' cwd=' + p.context.cwd + ' seq=' + p.context.scrollbackSeq));
let i = 0;
for (;;) {
  await checkpoint();
  console.log('step ' + ++i);
  await new Promise((r) => setTimeout(r, 150));
}
`;

describe('takeover → hand back, write grants and terminal input: real hub + worker + tmux + SDK agent', () => {
  let hub: TestHub;
  let worker: WorkerProcess;
  let admin: string;
  let alice: string; // the operator who takes over
  let bob: string; // another operator
  let observer: Viewer;
  let aliceSocket: Socket;
  let bobSocket: Socket;
  let work: string;
  let agentFile: string;
  /** Every REST response body of the flow, except the grantee's own grant-write answer. */
  const seen: string[] = [];

  beforeAll(async () => {
    hub = await startTestHub({ env: { SWEEP_INTERVAL: '100ms', PAUSE_SOFT_GRACE: '3s', LIVE_RW_GRANT_TTL: '2s', LIVE_PROVIDER_START_TIMEOUT: '5s' } });
    admin = await hub.token('admin');
    alice = await hub.token('operator');
    bob = await hub.token('operator');
    observer = await Viewer.connect(hub.url, await hub.token('observer'));
    aliceSocket = await connect(hub.url, '/dashboard', alice);
    bobSocket = await connect(hub.url, '/dashboard', bob);
    for (const s of [aliceSocket, bobSocket]) s.onAny((event, payload) => seen.push(`${event} ${JSON.stringify(payload)}`));
    observer.socket.onAny((event, payload) => seen.push(`${event} ${JSON.stringify(payload)}`));
    worker = startWorker({ hubUrl: hub.url, token: await hub.workerToken(`tko-${randomBytes(3).toString('hex')}`), capacity: 4, env: { TMATE_BIN: FAKE_TMATE } });
    work = mkdtempSync(path.join(tmpdir(), 'handoff-tko-'));
    agentFile = path.join(work, 'agent.mjs');
    writeFileSync(agentFile, AGENT);
  });
  afterAll(async () => {
    for (const s of [aliceSocket, bobSocket]) s?.close();
    observer?.close();
    await worker?.stop();
    await hub?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  const call = async (token: string, method: string, url: string, body?: unknown) => {
    const res = await api(hub.url, token, method, url, body);
    seen.push(JSON.stringify(res.body));
    return res;
  };
  const control = (token: string, runId: string, body: object) => call(token, 'POST', `/api/task-runs/${runId}/control`, body);
  /** Starts an agent run (its argv carries `tag`, for finding its processes) and waits for its web share. */
  const start = async (env: Record<string, string> = {}, tag = `run-${randomBytes(4).toString('hex')}`) => {
    const res = await call(alice, 'POST', '/api/task-runs', { command: { argv: [process.execPath, agentFile, tag] }, cwd: work, env });
    const runId = res.body.id as string;
    for (const s of [observer.socket, aliceSocket, bobSocket]) {
      await emitAck(s, 'run:subscribe', { runId });
      await emitAck(s, 'term:subscribe', { runId });
    }
    await observer.untilStatus(runId, ['running']);
    await observer.until('web session READY', () => observer.runs.get(runId)?.sessions.some((s) => s.provider === 'web' && s.status === 'READY'));
    return runId;
  };
  const output = (runId: string) => joinFrames([...new Map((observer.live.get(runId) ?? []).map((f) => [f.seq, f])).values()]);
  const run = (runId: string) => observer.runs.get(runId)!;
  const applied = (runId: string, seq: number) => observer.until(`control seq ${seq} applied`, () => run(runId)?.control.appliedSeq >= seq);
  const type = (socket: Socket, runId: string, data: string) => emitAck(socket, 'term:input', { runId, data });
  /** `ok`, or the error code the hub answered keystrokes with. */
  const outcome = async (socket: Socket, runId: string, data: string) => {
    const ack = await type(socket, runId, data);
    return ack.ok ? 'ok' : ack.error.code;
  };
  const audit = (runId: string) => em(hub.orm).execute<{ action: string; result: string; correlation_id: string; metadata: Record<string, unknown> }[]>(
    'select action, result, correlation_id, metadata from audit_events where run_id = ? order by seq', [runId]);
  const inbox = (runId: string) => readFileSync(path.join(worker.runDir, runId, 'inbox.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);
  /** Re-reads the run's tmate sessions until `pick` finds what it waits for. */
  const tmateSessions = <T>(runId: string, pick: (all: LiveSession[]) => T | undefined) =>
    eventually('tmate sessions', async () => pick(((await call(admin, 'GET', `/api/task-runs/${runId}/live-sessions`)).body.sessions as LiveSession[]).filter((s) => s.provider === 'tmate')));
  const tmateSession = async (runId: string) => {
    const res = await call(admin, 'POST', `/api/task-runs/${runId}/live-session`, { provider: 'tmate' });
    expect(res.status).toBe(201);
    return tmateSessions(runId, (all) => all.find((s) => s.id === res.body.session.id && s.status === 'READY'));
  };

  it('takeover: the taker types into a real shell, others are refused; hand back delivers the packet and the agent resumes; one correlation id; nothing secret leaks', async () => {
    const deployToken = `dt-${randomBytes(8).toString('hex')}`;
    const dbPassword = `pw-${randomBytes(8).toString('hex')}`;
    const opDir = mkdtempSync(path.join(work, 'opdir-'));
    // The operator loads the password from a file, so the value never shows in the terminal.
    writeFileSync(path.join(opDir, 'pw'), dbPassword);
    const runId = await start({ DEPLOY_TOKEN: deployToken });
    await observer.until('agent stepping', () => output(runId).includes('step 3'));
    const tmate = await tmateSession(runId);

    // Nothing may be typed before a grant, by anyone.
    for (const s of [aliceSocket, bobSocket, observer.socket]) expect(await outcome(s, runId, 'echo nope\r')).toBe('FORBIDDEN');

    const taken = await control(alice, runId, { action: 'takeover', ttlMinutes: 5 });
    expect(taken.status).toBe(200);
    const takenRun = taken.body as Run;
    expect(takenRun.control).toMatchObject({ state: 'operator', mode: 'soft', by: { name: expect.stringMatching(/^operator-/) } });
    expect(takenRun.writeGrants).toHaveLength(1);
    const grant = takenRun.writeGrants[0]!;
    expect(grant).toMatchObject({ status: 'active', sessionId: run(runId).sessions.find((s) => s.provider === 'web')!.id });
    expect(JSON.stringify(takenRun)).not.toContain(RW_MARK);
    await applied(runId, 1);
    expect((await audit(runId)).filter((r) => r.action === 'control.applied').at(-1)!.metadata).toMatchObject({ seq: 1, effective: 'operator' });
    // The agent halted at its checkpoint: no new step while the operator drives.
    const stepsAtTakeover = (output(runId).match(/step \d+/g) ?? []).length;

    // The taker's keystrokes reach a real shell on the worker; its output comes back to every viewer.
    const marker = `typed-${randomBytes(4).toString('hex')}`;
    for (const keys of [`cd ${opDir}\r`, 'export DB_PASSWORD="$(cat pw)"\r', `echo ${marker.slice(0, 6)}""${marker.slice(6)}\r`]) {
      expect(await type(aliceSocket, runId, keys)).toMatchObject({ ok: true });
    }
    // The command's output line (its echoed command line has the marker split by quotes).
    await observer.until('typed command output', () => new RegExp(`[\r\n]${marker}\r\n`).test(output(runId)));
    // Another operator and an observer are refused, and that is audited.
    expect(await outcome(bobSocket, runId, 'echo intruder\r')).toBe('FORBIDDEN');
    expect(await outcome(observer.socket, runId, 'echo intruder\r')).toBe('FORBIDDEN');
    expect((await audit(runId)).filter((r) => r.action === 'term.input' && r.result === 'denied').length).toBeGreaterThanOrEqual(5);

    // The grantee asks for the tmate RW link: it is in that response only.
    const granted = await api(hub.url, alice, 'POST', `/api/task-runs/${runId}/live-session/grant-write`, { provider: 'tmate', ttlMinutes: 5 });
    expect(granted.status).toBe(200);
    expect(granted.body.attachRw.tmate_ssh).toContain(RW_MARK);
    expect(granted.body.grant).toMatchObject({ id: grant.id, sessionId: tmate.id, status: 'active' });

    // Hand back: the controller only, with a summary.
    expect((await control(bob, runId, { action: 'handback', summary: 'not mine' })).body.error.code).toBe('STATE_CONFLICT');
    expect((await control(alice, runId, { action: 'handback' })).body.error.code).toBe('VALIDATION');
    expect((await control(alice, runId, { action: 'resume' })).body.error.code).toBe('STATE_CONFLICT');
    const back = await control(alice, runId, { action: 'handback', summary: 'fixed the config; carry on' });
    expect(back.status).toBe(200);
    expect(back.body.control).toMatchObject({ state: 'agent', controllerId: null });
    expect(back.body.writeGrants).toEqual([]);
    await applied(runId, 2);

    // The packet reached the agent's inbox once and its SDK callback; the agent steps again.
    await observer.until('SDK onHandoff', () => output(runId).includes('HANDOFF-RECEIVED'));
    const packets = inbox(runId).filter((e) => e.type === 'handoff');
    expect(packets).toHaveLength(1);
    const packet = packets[0]!;
    expect(packet).toMatchObject({ summary: 'fixed the config; carry on', context: { cwd: opDir } });
    expect(packet.context.env.DB_PASSWORD).toBe('[REDACTED:env]');
    // Only what the operator changed: the run's own DEPLOY_TOKEN (the agent has it) stays out of the packet.
    expect(packet.context.env).not.toHaveProperty('DEPLOY_TOKEN');
    expect(packet.context.scrollbackSeq).toBeGreaterThan(0);
    expect(output(runId)).toContain(`HANDOFF-RECEIVED summary=fixed the config; carry on cwd=${opDir}`);
    await observer.until('agent steps after the hand-back', () => (output(runId).match(/step \d+/g) ?? []).length > stepsAtTakeover + 2);

    // Input stops with the grant; the tmate share whose RW link went out was restarted.
    expect(await outcome(aliceSocket, runId, 'echo late\r')).toBe('FORBIDDEN');
    const sessions = await tmateSessions(runId, (all) => (all.length === 2 && all[1]!.status === 'READY' ? all : undefined));
    expect(sessions[0]).toMatchObject({ id: tmate.id, status: 'ENDED', endReason: 'rotated' });

    // One correlation id across the whole handoff.
    const rows = await audit(runId);
    const takeoverRow = rows.find((r) => r.action === 'control.takeover')!;
    const chain = rows.filter((r) => r.correlation_id === takeoverRow.correlation_id).map((r) => r.action);
    for (const action of ['control.takeover', 'rw.grant', 'handoff.initiated', 'control.applied', 'control.handback', 'rw.revoke', 'handoff.completed']) expect(chain).toContain(action);
    expect(chain.filter((a) => a === 'control.applied')).toHaveLength(2);
    const completed = rows.find((r) => r.action === 'handoff.completed')!;
    expect(completed.metadata).toMatchObject({ cwd: opDir, scrollbackSeq: packet.context.scrollbackSeq, env: { DB_PASSWORD: '[REDACTED:env]' } });
    const verify = await call(admin, 'GET', `/api/task-runs/${runId}/events/verify`);
    expect(verify.body.ok).toBe(true);

    // Issue 5: no RW attach string and no secret env value in logs, responses, pushes or the export.
    const exported = await api(hub.url, admin, 'GET', `/api/task-runs/${runId}/events?format=jsonl`);
    seen.push(typeof exported.body === "string" ? exported.body : JSON.stringify(exported.body));
    seen.push(JSON.stringify((await call(bob, 'GET', `/api/task-runs/${runId}`)).body));
    seen.push(JSON.stringify((await call(bob, 'GET', `/api/task-runs/${runId}/live-sessions`)).body));
    const haystacks = { responses: seen.join('\n'), hubLogs: hub.logs(), workerLogs: worker.output() };
    for (const [where, text] of Object.entries(haystacks)) {
      expect(text.length, where).toBeGreaterThan(0);
      for (const secret of [RW_MARK, deployToken, dbPassword]) expect(text.includes(secret), `${secret} in ${where}`).toBe(false);
    }
    await call(alice, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('a write grant: READY required, bounded TTL, expiry stops input and rotates the external share; revoke stops input at once', async () => {
    const queued = await call(alice, 'POST', '/api/task-runs', { command: { script: 'sleep 30' }, labels: { hold: 'yes' }, liveSession: false });
    expect((await call(alice, 'POST', `/api/task-runs/${queued.body.id}/live-session/grant-write`, {})).body.error.code).toBe('STATE_CONFLICT');
    await call(alice, 'POST', `/api/task-runs/${queued.body.id}/cancel`, {});

    const runId = await start();
    expect((await call(alice, 'POST', `/api/task-runs/${runId}/live-session/grant-write`, { ttlMinutes: 100_000 })).body.error.code).toBe('VALIDATION');
    expect((await call(alice, 'POST', `/api/task-runs/${runId}/live-session/grant-write`, { ttlMinutes: 0 })).body.error.code).toBe('VALIDATION');
    const observerToken = await hub.token('observer');
    // An observer may only ask: the default policy waits for an operator's approval, and refuses more than 30 minutes.
    const asked = await call(observerToken, 'POST', `/api/task-runs/${runId}/live-session/grant-write`, {});
    expect(asked.status).toBe(202);
    expect(asked.body.error.code).toBe('APPROVAL_REQUIRED');
    expect((await call(observerToken, 'POST', `/api/task-runs/${runId}/live-session/grant-write`, { ttlMinutes: 60 })).body.error.code).toBe('POLICY_DENIED');
    expect((await call(admin, 'POST', `/api/approvals/${asked.body.error.details.approvalId}/deny`, { reason: 'not now' })).status).toBe(200);
    const tmate = await tmateSession(runId);
    // Over 30 minutes an operator needs an admin's approval (default policy). The approved
    // grant's outcome is shown to approvers, so it has no attach data: the grantee reveals it.
    const long = await call(alice, 'POST', `/api/task-runs/${runId}/live-session/grant-write`, { ttlMinutes: 60, provider: 'tmate' });
    expect(long.status).toBe(202);
    expect(long.body.error.code).toBe('APPROVAL_REQUIRED');
    const approved = await call(admin, 'POST', `/api/approvals/${long.body.error.details.approvalId}/approve`, { reason: 'incident' });
    expect(approved.body).toMatchObject({ status: 'approved', outcome: { ok: true } });
    expect(JSON.stringify(approved.body)).not.toContain(RW_MARK);
    expect((await call(bob, 'GET', `/api/task-runs/${runId}/live-session/write-grant`)).status).toBe(403);
    const revealed = await api(hub.url, alice, 'GET', `/api/task-runs/${runId}/live-session/write-grant`);
    expect(revealed.status).toBe(200);
    expect(revealed.body.attachRw.tmate_ssh).toContain(RW_MARK);

    // Default TTL here is 2 s (LIVE_RW_GRANT_TTL); asking again renews the live grant to that.
    const grantUpdates: WriteGrant[] = [];
    observer.socket.on('grant:updated', (g: WriteGrant) => grantUpdates.push(g));
    const granted = await api(hub.url, alice, 'POST', `/api/task-runs/${runId}/live-session/grant-write`, { provider: 'tmate' });
    expect(granted.status).toBe(200);
    expect(granted.body.attachRw.tmate_ssh).toContain(RW_MARK);
    expect(granted.body.grant.id).toBe(revealed.body.grant.id);
    expect(Date.parse(granted.body.grantedUntil) - Date.now()).toBeLessThanOrEqual(2000);
    // Without a takeover the keys go to the agent's own pane (this agent does not read them).
    expect(await type(aliceSocket, runId, 'x')).toMatchObject({ ok: true });
    await observer.until('grant expired push', () => grantUpdates.find((g) => g.id === granted.body.grant.id && g.status === 'expired'), 10_000);
    expect(await outcome(aliceSocket, runId, 'x')).toBe('FORBIDDEN');
    const rotated = await tmateSessions(runId, (all) => (all.length === 2 && all[1]!.status === 'READY' ? all : undefined));
    expect(rotated[0]).toMatchObject({ id: tmate.id, endReason: 'rotated' });
    const rows = await audit(runId);
    expect(rows.map((r) => r.action)).toEqual(expect.arrayContaining(['rw.grant', 'rw.expire', 'session.rotate']));

    // Revoke by another operator: input stops at once, and the grant is gone from the run.
    const again = await call(alice, 'POST', `/api/task-runs/${runId}/live-session/grant-write`, { ttlMinutes: 5 });
    expect(again.status).toBe(200);
    expect(await type(aliceSocket, runId, 'echo hi\r')).toMatchObject({ ok: true });
    const revoked = await call(bob, 'POST', `/api/task-runs/${runId}/live-session/revoke-write`, {});
    expect(revoked.status).toBe(200);
    expect(revoked.body.grants).toMatchObject([{ id: again.body.grant.id, status: 'revoked', endReason: 'revoked' }]);
    expect(await outcome(aliceSocket, runId, 'x')).toBe('FORBIDDEN');
    expect((await call(bob, 'POST', `/api/task-runs/${runId}/live-session/revoke-write`, { grantId: again.body.grant.id })).body.error.code).toBe('STATE_CONFLICT');
    expect((await call(bob, 'POST', `/api/task-runs/${runId}/live-session/revoke-write`, { grantId: '01a1fc84-556c-72b6-8c34-8b8d9e28c380' })).body.error.code).toBe('NOT_FOUND');
    await eventually('run view without grants', async () => ((await call(bob, 'GET', `/api/task-runs/${runId}`)).body as Run).writeGrants.length === 0);
    await call(alice, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('a long takeover waits for an admin: handoff.requested → handoff.approved → the takeover, all under the approval\'s id', async () => {
    const runId = await start();
    const asked = await control(alice, runId, { action: 'takeover', ttlMinutes: 60 });
    expect(asked.status).toBe(202);
    const approvalId = asked.body.error.details.approvalId as string;
    expect(run(runId).control.state).toBe('agent');
    expect((await call(alice, 'POST', `/api/approvals/${approvalId}/approve`, {})).body.error.code).toBe('FORBIDDEN');
    const approved = await call(admin, 'POST', `/api/approvals/${approvalId}/approve`, { reason: 'prod incident' });
    expect(approved.body).toMatchObject({ status: 'approved', outcome: { ok: true } });
    await observer.until('taken over after approval', () => run(runId)?.control.state === 'operator' && run(runId).control.appliedSeq >= 1);
    // Replayed as the requester: Alice controls the run and holds its grant, not the approving admin.
    const aliceId = (await call(alice, 'GET', '/api/auth/whoami')).body.id as string;
    expect(run(runId).control.controllerId).toBe(aliceId);
    expect(run(runId).writeGrants.map((g) => g.granteeId)).toEqual([aliceId]);
    const chain = (await audit(runId)).filter((r) => r.correlation_id === approvalId).map((r) => r.action);
    expect(chain).toEqual(expect.arrayContaining(['handoff.requested', 'handoff.approved', 'approval.executed', 'control.takeover', 'rw.grant', 'handoff.initiated', 'control.applied']));
    // A denied takeover is audited as such and changes nothing.
    await control(alice, runId, { action: 'handback', summary: 'back' });
    const again = await control(alice, runId, { action: 'takeover', ttlMinutes: 60 });
    const denied = await call(admin, 'POST', `/api/approvals/${again.body.error.details.approvalId}/deny`, { reason: 'not now' });
    expect(denied.body.status).toBe('denied');
    expect((await audit(runId)).filter((r) => r.correlation_id === again.body.error.details.approvalId).map((r) => [r.action, r.result])).toEqual([['handoff.requested', 'pending'], ['handoff.denied', 'denied']]);
    await call(alice, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('an agent that asked for an operator gets one: the takeover clears needs-operator', async () => {
    const res = await call(alice, 'POST', '/api/task-runs', { command: { script: 'handoff-agent request-operator "stuck on a migration"; while true; do handoff-agent checkpoint; sleep 0.2; done' } });
    const runId = res.body.id as string;
    await emitAck(observer.socket, 'run:subscribe', { runId });
    await observer.until('needs-operator flag', () => run(runId)?.needsOperator?.reason === 'stuck on a migration');
    await observer.until('web session READY', () => run(runId)?.sessions.some((s) => s.provider === 'web' && s.status === 'READY'));
    const taken = await control(alice, runId, { action: 'takeover', ttlMinutes: 5 });
    expect(taken.body).toMatchObject({ needsOperator: null, control: { state: 'operator' } });
    await call(alice, 'POST', `/api/task-runs/${runId}/cancel`, {});
  });

  it('takeover needs a READY session (nothing changes without one); cancel during a takeover leaves no process', async () => {
    const noShare = await call(alice, 'POST', '/api/task-runs', { command: { argv: [process.execPath, agentFile] }, cwd: work, liveSession: false });
    const id = noShare.body.id as string;
    await emitAck(observer.socket, 'run:subscribe', { runId: id });
    await observer.untilStatus(id, ['running']);
    const refused = await control(alice, id, { action: 'takeover' });
    expect(refused.body.error.code).toBe('STATE_CONFLICT');
    const unchanged = (await call(alice, 'GET', `/api/task-runs/${id}`)).body as Run;
    expect(unchanged.control).toMatchObject({ state: 'agent', seq: 0 });
    expect(unchanged.writeGrants).toEqual([]);
    await call(alice, 'POST', `/api/task-runs/${id}/cancel`, {});

    const tag = `cancel-${randomBytes(4).toString('hex')}`;
    const runId = await start({}, tag);
    const taken = await control(alice, runId, { action: 'takeover', mode: 'hard', ttlMinutes: 5 });
    expect(taken.status).toBe(200);
    await applied(runId, 1);
    const marker = `op-sleep-${randomBytes(3).toString('hex')}`;
    expect(await type(aliceSocket, runId, `sh -c 'sleep 300' ${marker}\r`)).toMatchObject({ ok: true });
    await eventually('operator command running', async () => pidsMatching(marker).length > 0);
    await call(alice, 'POST', `/api/task-runs/${runId}/cancel`, {});
    // The grant ends with the run's sessions, and dashboards hear of it.
    await observer.until('cancelled without grants', () => run(runId)?.status === 'cancelled' && run(runId).writeGrants.length === 0);
    await eventually('no process of the run left', async () => pidsMatching(marker).length === 0 && pidsMatching(tag).length === 0, 10_000);
    const grants = await em(hub.orm).execute<{ status: string; end_reason: string }[]>('select status, end_reason from write_grants where run_id = ?', [runId]);
    expect(grants).toEqual([{ status: 'revoked', end_reason: expect.stringMatching(/^session-/) }]);
    const sessions = (await call(alice, 'GET', `/api/task-runs/${runId}/live-sessions`)).body.sessions as LiveSession[];
    expect(sessions.every((s) => s.status !== 'READY')).toBe(true);
  });
});
